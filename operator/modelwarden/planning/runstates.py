"""What a retraining run's own system says about it, as the JobState the DriftPolicy decisions
follow: an Argo Workflow's phase, an Airflow DAG run's state, a Kubeflow run's state. A state a
system adds later reads as Running (followed, never taken for an outcome)."""

from __future__ import annotations

from typing import Any

from modelwarden.api.duration import parse_timestamp
from modelwarden.contract.kubernetes import TRIGGER_LABEL
import json

from modelwarden.contract.retraining import CONTEXT_ANNOTATION
from modelwarden.planning.retraining import JobOutcome, JobState, told_from_context

ARGO_FAILED = {"Failed", "Error"}
AIRFLOW_FAILED = {"failed"}
KUBEFLOW_FAILED = {"FAILED", "CANCELED", "SKIPPED"}


def _timestamp(value: Any) -> Any:
    try:
        return parse_timestamp(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def workflow_state(name: str, workflow: dict[str, Any]) -> JobState:
    """An Argo Workflow: Succeeded, Failed or Error finish it; anything else (Pending, Running, no
    phase yet) is Running."""
    meta, status = workflow.get("metadata") or {}, workflow.get("status") or {}
    phase = status.get("phase") or ""
    seen = {"started_at": _timestamp(meta.get("creationTimestamp")), "trigger": (meta.get("labels") or {}).get(TRIGGER_LABEL, ""),
            "told": told_from_context((meta.get("annotations") or {}).get(CONTEXT_ANNOTATION) or "{}")}
    if phase == "Succeeded":
        return JobState(name, JobOutcome.SUCCEEDED, _timestamp(status.get("finishedAt")), **seen)
    if phase in ARGO_FAILED:
        message = f"Workflow {phase.lower()}" + (f": {status['message']}" if status.get("message") else "")
        return JobState(name, JobOutcome.FAILED, _timestamp(status.get("finishedAt")), message[:1024], **seen)
    return JobState(name, JobOutcome.RUNNING, **seen)


def workflow_result_parameter(workflow: dict[str, Any], parameter: str) -> str:
    """The value of the output parameter `parameter` of the Workflow's entrypoint: Argo records it on
    the root node (status.nodes[<workflow name>]), and in status.outputs only when it has a globalName."""
    status = workflow.get("status") or {}
    root = (status.get("nodes") or {}).get((workflow.get("metadata") or {}).get("name") or "") or {}
    for outputs in (root.get("outputs"), status.get("outputs")):
        for found in (outputs or {}).get("parameters") or [] if isinstance(outputs, dict) else []:
            if isinstance(found, dict) and found.get("name") == parameter and isinstance(found.get("value"), str):
                return found["value"]
    return ""


def airflow_state(name: str, dag_run: dict[str, Any]) -> JobState:
    """An Airflow DAG run: success and failed finish it; queued and running (and any other) do not."""
    state = str(dag_run.get("state") or "")
    conf = dag_run.get("conf") if isinstance(dag_run.get("conf"), dict) else {}
    seen = {"started_at": _timestamp(dag_run.get("run_after")) or _timestamp(dag_run.get("queued_at")),
            "trigger": str(conf.get("MODELWARDEN_TRIGGER") or "").lower(), "told": told_from_context(conf)}
    if state == "success":
        return JobState(name, JobOutcome.SUCCEEDED, _timestamp(dag_run.get("end_date")), **seen)
    if state in AIRFLOW_FAILED:
        return JobState(name, JobOutcome.FAILED, _timestamp(dag_run.get("end_date")), f"DAG run {state}", **seen)
    return JobState(name, JobOutcome.RUNNING, **seen)


def kubeflow_state(name: str, run: dict[str, Any], context_parameter: str = "") -> JobState:
    """A Kubeflow Pipelines run: SUCCEEDED, or FAILED/CANCELED/SKIPPED, finish it; PENDING, RUNNING,
    PAUSED, CANCELING and any other state do not. A failure's reason is in its state history."""
    state = str(run.get("state") or "")
    parameters = ((run.get("runtime_config") or {}).get("parameters") or {}) if isinstance(run.get("runtime_config"), dict) else {}
    try:
        context = json.loads(parameters.get(context_parameter) or "{}") if context_parameter else {}
    except (TypeError, ValueError):
        context = {}
    context = context if isinstance(context, dict) else {}
    described = str(run.get("description") or "").split(" ")  # "modelwarden <trigger> retraining of ...": no context parameter
    trigger = context.get("MODELWARDEN_TRIGGER") or (described[1] if len(described) > 2 and described[0] == "modelwarden" else "")
    seen = {"started_at": _timestamp(run.get("created_at")), "trigger": str(trigger).lower(),
            "told": told_from_context(context)}
    if state == "SUCCEEDED":
        return JobState(name, JobOutcome.SUCCEEDED, _timestamp(run.get("finished_at")), **seen)
    if state in KUBEFLOW_FAILED:
        history = [h for h in run.get("state_history") or [] if isinstance(h, dict) and isinstance(h.get("error"), dict)]
        error = history[-1]["error"] if history else run.get("error") if isinstance(run.get("error"), dict) else {}
        message = f"run {state.lower()}" + (f": {error['message']}" if error.get("message") else "")
        return JobState(name, JobOutcome.FAILED, _timestamp(run.get("finished_at")), message[:1024], **seen)
    return JobState(name, JobOutcome.RUNNING, **seen)
