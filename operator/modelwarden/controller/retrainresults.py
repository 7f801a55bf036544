"""Reading what a succeeded retraining Job produced (contract/retraining.py): its container's
termination message first, else the MLflow model version tagged with its breach id.

A result that cannot be read now (the API or MLflow failing) is `unavailable`: the tick leaves the
Job running in status and asks again, so a blip never turns into RetrainResultInvalid.
"""

from __future__ import annotations

from typing import Any

from modelwarden.contract.retraining import (BREACH_ID_TAG, InvalidResult, ResultPending, breach_id, from_model_version,
                                             parse_termination_message)
from modelwarden.controller.config import OperatorConfig
from modelwarden.controller.resolution import RegistryFactory
from modelwarden.kube.api import KubeApi, describe_error
from modelwarden.planning.retraining import JobResult
from modelwarden.registry.base import RegistryError, RegistryUnavailable


def read_result(kube: KubeApi, config: OperatorConfig, registry: RegistryFactory, namespace: str, job_name: str) -> JobResult:
    try:
        pods = kube.list("v1", "Pod", namespace, f"job-name={job_name}")
    except Exception as exc:
        return JobResult(unavailable=f"cannot list the Job's pods: {describe_error(exc)}")
    message = termination_message(pods)
    if message:
        try:
            return JobResult(model=parse_termination_message(message))
        except InvalidResult as exc:
            return JobResult(problem=str(exc))
    tag = f"{BREACH_ID_TAG}={breach_id(namespace, job_name)}"
    tracking = config.mlflow_tracking_uri
    if not tracking:
        return JobResult(problem=f"no termination message, and no MLflow tracking URI (--mlflow-tracking-uri) to find a "
                                 f"model version tagged {tag}")
    try:
        versions = registry(tracking, config.mlflow_tracking_token).tagged_versions(BREACH_ID_TAG, breach_id(namespace, job_name))
    except RegistryUnavailable as exc:
        return JobResult(unavailable=str(exc))
    except RegistryError as exc:
        return JobResult(problem=str(exc))
    if not versions:
        return JobResult(problem=f"no termination message, and no MLflow model version tagged {tag}")
    try:
        return JobResult(model=from_model_version(versions[0]))  # the newest: a retried pod may have registered twice
    except ResultPending as exc:
        return JobResult(unavailable=str(exc))
    except InvalidResult as exc:
        return JobResult(problem=str(exc))


def termination_message(pods: list[dict[str, Any]]) -> str:
    """The first non-empty termination message of a succeeded pod's containers, in spec order."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Succeeded":
            continue
        by_name = {c.get("name"): c for c in status.get("containerStatuses") or []}
        for container in (pod.get("spec") or {}).get("containers") or []:
            terminated = ((by_name.get(container.get("name")) or {}).get("state") or {}).get("terminated") or {}
            if (terminated.get("message") or "").strip():
                return terminated["message"].strip()
    return ""
