"""Retraining Jobs as the DriftPolicy decisions see them: what a Job's status says, and the
deterministic Job names that make creating a Job twice a no-op (the API answers 409)."""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from modelwarden.api.duration import parse_timestamp
from modelwarden.api.policystatus import DriftPolicyStatus, RetrainResult, RetrainStatus
from modelwarden.builders.jobs import PolicyOwner, RetrainContext
from modelwarden.contract.kubernetes import TRIGGER_LABEL
from modelwarden.contract.retraining import CONTEXT_ANNOTATION, ReportedModel
from modelwarden.planning.types import Event


ADOPTION_CLOCK_SKEW = datetime.timedelta(minutes=1)  # a backend's clock may run behind the API server's
NOUNS = {"Job": "Job", "ArgoWorkflow": "Workflow", "Airflow": "Airflow DAG run", "Kubeflow": "Kubeflow run"}


def run_noun(backend: str | None) -> str:
    """What Events call a run of this backend."""
    return NOUNS.get(backend or "Job", "Job")


class JobOutcome(str, Enum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Trigger(str, Enum):
    """Why a retraining Job runs (the Job's modelwarden.io/trigger label is the lower-case value)."""

    BREACH = "Breach"
    MANUAL = "Manual"
    SCHEDULE = "Schedule"


@dataclass(frozen=True)
class RetrainTarget:
    """What a retraining Job is told about the model it replaces, and where to register its result."""

    stable_version: str = ""
    stable_model_uri: str = ""
    mlflow_tracking_uri: str = ""


@dataclass(frozen=True)
class JobResult:
    """What a succeeded Job reported (contract/retraining.py), read when it succeeded."""

    model: ReportedModel | None = None
    problem: str | None = None  # it reported nothing usable: RetrainResultInvalid, nothing rolls out
    unavailable: str | None = None  # it could not be read now (the API or MLflow failed): asked again next tick


@dataclass(frozen=True)
class JobState:
    """A retraining Job as observed."""

    name: str
    outcome: JobOutcome
    finished_at: datetime.datetime | None = None
    message: str = ""
    started_at: datetime.datetime | None = None  # metadata.creationTimestamp
    trigger: str = ""  # the modelwarden.io/trigger label: breach, manual or schedule
    result: JobResult | None = None  # a succeeded Job's result, once gathered
    told: dict[str, Any] = field(default_factory=dict, compare=False)  # RetrainStatus lineage fields from its context


def _told(job: dict[str, Any]) -> dict[str, Any]:
    """The lineage the Job was told (its pod template's context annotation), as RetrainStatus fields:
    a status that lost the write recording the Job gets them back when it adopts it."""
    template = ((job.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return told_from_context((template.get("annotations") or {}).get(CONTEXT_ANNOTATION) or "{}")


def told_from_context(document: str | dict[str, Any]) -> dict[str, Any]:
    """RetrainStatus lineage fields from a run's context (the JSON document, or it parsed)."""
    try:
        context = json.loads(document) if isinstance(document, str) else document
        checks = context.get("MODELWARDEN_FAILING_CHECKS")
        told = {"breach_id": str(context.get("MODELWARDEN_BREACH_ID") or "")[:300] or None,
                "parent_version": str(context.get("MODELWARDEN_STABLE_VERSION") or "")[:128] or None,
                "window_start": parse_timestamp(context.get("MODELWARDEN_WINDOW_START") or None),
                "window_end": parse_timestamp(context.get("MODELWARDEN_WINDOW_END") or None),
                "checks": [str(c["check"])[:253] for c in checks if isinstance(c, dict) and c.get("check")][:32]
                if isinstance(checks, list) else []}
    except (ValueError, TypeError, AttributeError):  # not what the operator wrote: adopt without it
        return {}
    return {key: value for key, value in told.items() if value}


@dataclass(frozen=True)
class RetrainRequest:
    """A retraining Job to create; its name is deterministic, so creating it twice is a no-op (409)."""

    job_name: str
    trigger: Trigger
    reason: str
    failing_checks: tuple[dict[str, object], ...] = ()
    token: str | None = None  # the manual trigger's annotation value


@dataclass(frozen=True)
class RetrainRun:
    """A retraining run to launch in the policy's backend: its deterministic name (so launching it
    twice is a no-op) and what it is told."""

    name: str
    trigger: str
    context: RetrainContext
    owner: PolicyOwner


def job_state(job: dict[str, Any]) -> JobState:
    """Running until a Complete or Failed condition (or a success count) says otherwise."""
    status = job.get("status") or {}
    meta = job.get("metadata", {})
    name = meta.get("name", "")
    seen = {"started_at": parse_timestamp(meta.get("creationTimestamp")),
            "trigger": (meta.get("labels") or {}).get(TRIGGER_LABEL, ""), "told": _told(job)}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            finished = parse_timestamp(status.get("completionTime") or condition.get("lastTransitionTime"))
            return JobState(name, JobOutcome.SUCCEEDED, finished, **seen)
        if condition.get("type") in ("Failed", "FailureTarget"):
            message = condition.get("message") or condition.get("reason") or ""
            return JobState(name, JobOutcome.FAILED, parse_timestamp(condition.get("lastTransitionTime")), message, **seen)
    completions = int((job.get("spec") or {}).get("completions") or 1)
    if int(status.get("succeeded") or 0) >= completions:
        return JobState(name, JobOutcome.SUCCEEDED, parse_timestamp(status.get("completionTime")), **seen)
    return JobState(name, JobOutcome.RUNNING, **seen)


def retrain_job_name(policy: str, breach_id: str) -> str:
    """<policy>-retrain-<8 hex of the breach id>, within the 63 characters a Job name allows."""
    digest = hashlib.sha256(breach_id.encode()).hexdigest()[:8]
    return f"{policy[:46].rstrip('-.')}-retrain-{digest}"


def record_result(retrain: RetrainStatus, result: JobResult | None, events: list[Event]) -> None:
    """A succeeded Job's result into status.lastRetrain: the candidate ModelDeployments take, or
    RetrainResultInvalid saying why there is none (missing data never rolls anything out)."""
    if result is not None and result.model is not None:
        model = result.model
        retrain.result = RetrainResult(model_uri=model.model_uri, version=model.version, model_version=model.model_version,
                                       run_id=model.run_id, reported_by=model.reported_by)
        retrain.result_error = None  # e.g. "cannot be read yet" from an earlier tick
        events.append(Event("Normal", "RetrainResult", f"{run_noun(retrain.backend)} {retrain.job_name} produced {model.model_uri} (version "
                                                       f"{model.version}, reported by {model.reported_by})"))
        return
    retrain.result_error = ((result.problem if result else None) or f"the {run_noun(retrain.backend)} reported no model")[:1024]
    events.append(Event("Warning", "RetrainResultInvalid", f"{run_noun(retrain.backend)} {retrain.job_name}: {retrain.result_error}; "
                                                           "nothing rolls out"))


def note_unreadable(retrain: RetrainStatus, why: str, events: list[Event]) -> None:
    """A succeeded Job whose result cannot be read now (the API or MLflow failing): it stays Running
    and is asked again next tick; said once (status.lastRetrain.resultError, Event RetrainResultUnavailable)."""
    noun = run_noun(retrain.backend)
    message = f"the {noun} succeeded; its result cannot be read yet (asked again each tick): {why}"[:1024]
    if retrain.result_error != message:
        retrain.result_error = message
        events.append(Event("Warning", "RetrainResultUnavailable", f"{noun} {retrain.job_name}: {message}"))


def note_unobservable(retrain: RetrainStatus, job: JobState, events: list[Event]) -> None:
    """A running run its backend could not report on (JobState.message while Running) sets
    followError, with one Event when it starts; an answer clears it."""
    why = job.message[:1024] if job.outcome == JobOutcome.RUNNING and job.message else None
    if why and retrain.follow_error is None:
        events.append(Event("Warning", "RetrainUnobservable", f"{run_noun(retrain.backend)} {retrain.job_name}: {why}"))
    retrain.follow_error = (retrain.follow_error or why) if why else None  # the first reason while it lasts: one write


def adopt_unrecorded_job(previous: DriftPolicyStatus, jobs: list[JobState], backend: str | None = None,
                         created: datetime.datetime | None = None) -> DriftPolicyStatus:
    """The newest breach or manual retraining Job of this policy that status does not record (it
    was created, but the status write recording it was refused or lost): status catches up with
    the cluster, so cooldown and one-Job-at-a-time hold and no second Job is launched for it."""
    recorded = previous.last_retrain
    since = created - ADOPTION_CLOCK_SKEW if created else None  # an Airflow/KFP run outlives a deleted policy of that name
    candidates = [j for j in jobs if j.trigger in ("breach", "manual") and j.started_at is not None
                  and (since is None or j.started_at >= since)
                  and (recorded is None or (j.name != recorded.job_name and j.started_at > recorded.started_at))]
    if not candidates:
        return previous
    newest = max(candidates, key=lambda j: j.started_at)  # type: ignore[arg-type, return-value]
    status = previous.model_copy(deep=True)
    status.last_retrain = RetrainStatus(job_name=newest.name, started_at=newest.started_at, trigger=newest.trigger.title(),
                                        backend=None if backend == "Job" else backend, **newest.told)
    return status
