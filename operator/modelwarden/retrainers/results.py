"""The result every backend can report the same way: an MLflow model version tagged with the run's
breach id (contract/retraining.py)."""

from __future__ import annotations

from modelwarden.contract.retraining import BREACH_ID_TAG, InvalidResult, ResultPending, breach_id, from_model_version
from modelwarden.planning.retraining import JobResult
from modelwarden.registry.base import RegistryError, RegistryUnavailable
from modelwarden.retrainers.base import ResultSource


def tagged_model_version(source: ResultSource, namespace: str, name: str, instead_of: str) -> JobResult:
    """The newest model version tagged with this run's breach id (a retried step may have
    registered twice); `instead_of` names what was looked for first, for the message."""
    tag = f"{BREACH_ID_TAG}={breach_id(namespace, name)}"
    if not source.tracking_uri:
        return JobResult(problem=f"no {instead_of}, and no MLflow tracking URI (--mlflow-tracking-uri) to find a model "
                                 f"version tagged {tag}")
    try:
        versions = source.registry(source.tracking_uri, source.token).tagged_versions(BREACH_ID_TAG, breach_id(namespace, name))
    except RegistryUnavailable as exc:
        return JobResult(unavailable=str(exc))
    except RegistryError as exc:
        return JobResult(problem=str(exc))
    if not versions:
        return JobResult(problem=f"no {instead_of}, and no MLflow model version tagged {tag}")
    try:
        return JobResult(model=from_model_version(versions[0]))
    except ResultPending as exc:
        return JobResult(unavailable=str(exc))
    except InvalidResult as exc:
        return JobResult(problem=str(exc))
