"""Pure builders for retraining: a batch/v1 Job per trigger and a CronJob for spec.retrain.schedule.

Every container (and init container) gets the context as MODELWARDEN_* environment variables and
as a JSON file (contract/retraining.py); ours win over same-named variables of the template, so the
contract always holds.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass
from typing import Any

from modelwarden.api.actions import JobTemplate
from modelwarden.api.duration import format_timestamp
from modelwarden.builders.workloads import owner_reference
from modelwarden.contract.kubernetes import MANAGED_BY, POLICY_LABEL, TRIGGER_LABEL
from modelwarden.contract.retraining import CONTEXT_ANNOTATION, CONTEXT_DIRECTORY, CONTEXT_FILE, RESULT_FILE, context_document

CONTEXT_VOLUME = "modelwarden-retrain-context"


@dataclass(frozen=True)
class PolicyOwner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return owner_reference("DriftPolicy", self.name, self.uid)


@dataclass(frozen=True)
class RetrainContext:
    """What the retraining code is told (the env contract in docs/driftpolicy.md)."""

    model: str
    namespace: str
    track: str
    policy: str
    reason: str
    version: str = ""
    failing_checks: tuple[dict[str, object], ...] = ()
    window_start: datetime.datetime | None = None
    window_end: datetime.datetime | None = None
    breach_id: str = ""  # NAMESPACE/JOB: tag the registered model version with it (modelwarden.io/breach-id)
    stable_version: str = ""  # the stable version serving now (the candidate's parent)
    stable_model_uri: str = ""  # what the stable pods fetch
    mlflow_tracking_uri: str = ""  # where to register the new model version
    reference: dict[str, object] | None = None  # the policy's spec.reference (what "no drift" was judged against)

    def values(self) -> dict[str, str]:
        values = {
            "MODELWARDEN_MODEL": self.model,
            "MODELWARDEN_NAMESPACE": self.namespace,
            "MODELWARDEN_VERSION": self.version,
            "MODELWARDEN_TRACK": self.track,
            "MODELWARDEN_REASON": self.reason,
            "MODELWARDEN_FAILING_CHECKS": json.dumps(list(self.failing_checks), separators=(",", ":")),
            "MODELWARDEN_WINDOW_START": format_timestamp(self.window_start) if self.window_start else "",
            "MODELWARDEN_WINDOW_END": format_timestamp(self.window_end) if self.window_end else "",
            "MODELWARDEN_POLICY": self.policy,
            "MODELWARDEN_BREACH_ID": self.breach_id,
            "MODELWARDEN_STABLE_VERSION": self.stable_version,
            "MODELWARDEN_STABLE_MODEL_URI": self.stable_model_uri,
            "MODELWARDEN_MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "MODELWARDEN_REFERENCE": json.dumps(self.reference or {}, separators=(",", ":"), sort_keys=True),
        }
        return values

    def env(self) -> list[dict[str, str]]:
        files = {"MODELWARDEN_CONTEXT_FILE": CONTEXT_FILE, "MODELWARDEN_RESULT_FILE": RESULT_FILE}
        return [{"name": name, "value": value} for name, value in {**self.values(), **files}.items()]

    def document(self) -> str:
        """The context file: the same values, lists and objects as JSON rather than strings."""
        values: dict[str, object] = dict(self.values())
        values["MODELWARDEN_FAILING_CHECKS"] = list(self.failing_checks)
        values["MODELWARDEN_REFERENCE"] = self.reference or {}
        return context_document(values)


def retrain_job(owner: PolicyOwner, template: JobTemplate, name: str, trigger: str, context: RetrainContext) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, name, template, trigger),
        "spec": _job_spec(template, context, trigger),
    }


def retrain_cronjob(owner: PolicyOwner, template: JobTemplate, schedule: str, context: RetrainContext) -> dict[str, Any]:
    """One CronJob per policy, named <policy>-retrain (concurrencyPolicy Forbid: at most one run)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(owner, cronjob_name(owner.name), template, "Schedule"),
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"metadata": _metadata(owner, "", template, "Schedule"), "spec": _job_spec(template, context, "Schedule")},
        },
    }


def cronjob_name(policy: str) -> str:
    return f"{policy[:44].rstrip('-.')}-retrain"


def _metadata(owner: PolicyOwner, name: str, template: JobTemplate, trigger: str) -> dict[str, Any]:
    given = template.metadata or {}
    labels = {**(given.get("labels") or {}), **MANAGED_BY, POLICY_LABEL: owner.name, TRIGGER_LABEL: trigger.lower()}
    metadata: dict[str, Any] = {"labels": labels}
    if given.get("annotations"):
        metadata["annotations"] = dict(given["annotations"])
    if name:
        metadata = {"name": name, "namespace": owner.namespace, **metadata, "ownerReferences": [owner.reference()]}
    return metadata


def _job_spec(template: JobTemplate, context: RetrainContext, trigger: str) -> dict[str, Any]:
    pod = copy.deepcopy(template.template)
    pod_spec = pod.setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Never")
    annotations = pod.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[CONTEXT_ANNOTATION] = context.document()
    env = [*context.env(), {"name": "MODELWARDEN_TRIGGER", "value": trigger}]
    names = {item["name"] for item in env}
    volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") != CONTEXT_VOLUME]
    pod_spec["volumes"] = [*volumes, {"name": CONTEXT_VOLUME, "downwardAPI": {"items": [
        {"path": "context.json", "fieldRef": {"fieldPath": f"metadata.annotations['{CONTEXT_ANNOTATION}']"}}]}}]
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key) or []:
            container["env"] = [e for e in container.get("env") or [] if e.get("name") not in names] + env
            mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != CONTEXT_VOLUME]
            container["volumeMounts"] = [*mounts, {"name": CONTEXT_VOLUME, "mountPath": CONTEXT_DIRECTORY, "readOnly": True}]
    spec: dict[str, Any] = {"template": pod}
    if template.backoff_limit is not None:
        spec["backoffLimit"] = template.backoff_limit
    if template.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = template.active_deadline_seconds
    if template.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = template.ttl_seconds_after_finished
    return spec
