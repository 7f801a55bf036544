"""Day-2 requests on a ModelDeployment (`kubectl modelwarden promote|abort|approve|pause|resume`):
annotations a person sets. A new value of a request annotation is acted on once and acknowledged
in status.requests at once (acted on or ignored, never twice); `modelwarden.io/paused` is a state.
Pure: plan() calls these; nothing here reads or writes the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelwarden.api.modeldeployment import ModelDeployment, ModelDeploymentStatus, Requests, StepApproval
from modelwarden.contract.kubernetes import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSED_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
)
from modelwarden.planning.types import Event

ANNOTATIONS = {"promote": PROMOTE_ANNOTATION, "promote_full": PROMOTE_FULL_ANNOTATION, "abort": ABORT_ANNOTATION,
               "approve": APPROVE_ANNOTATION}
WHAT = {"promote": "promote", "promote_full": "promote --full", "abort": "abort", "approve": "approve"}


@dataclass
class Pending:
    """The requests with a new value, by kind (promote, promote_full, abort, approve)."""

    tokens: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    def peek(self, kind: str) -> str | None:
        return self.tokens.get(kind) if kind not in self.used else None

    def use(self, kind: str) -> str | None:
        """The request's value, marked as acted on (None when there is none)."""
        token = self.peek(kind)
        if token is not None:
            self.used.add(kind)
        return token

    def describe(self, kind: str) -> str:
        return f"{ANNOTATIONS[kind]}={self.tokens[kind]}"

    def ignored(self, why: str, status: ModelDeploymentStatus) -> list[Event]:
        """An Event for each request nothing acted on, recorded in status.requests.ignored too (what
        `kubectl modelwarden` reads): the person who asked learns why."""
        unused = [kind for kind in self.tokens if kind not in self.used]
        if unused:
            _record_ignored(status, "; ".join(f"{self.describe(kind)}: {why}" for kind in unused))
        return [Event("Normal", "RequestIgnored", f"{WHAT[kind]} ({self.describe(kind)}) ignored: {why}") for kind in unused]


def _record_ignored(status: ModelDeploymentStatus, what: str) -> None:
    status.requests = (status.requests or Requests()).model_copy(update={"ignored": what[:512]})


def handle_retry(annotations: dict[str, str], status: ModelDeploymentStatus, events: list[Event]) -> None:
    """modelwarden.io/retry: a new value starts a rolled-back canary over from its first step, or
    serves a rolled-back stable (the spec's) again; with nothing rolled back it is ignored."""
    token = annotations.get(RETRY_ANNOTATION)
    if not token or token == status.retry_token:
        return
    status.retry_token = token
    status.requests = (status.requests or Requests()).model_copy(update={"retry": token})
    rollback = status.rollback
    if rollback is None:
        _record_ignored(status, f"{RETRY_ANNOTATION}={token}: nothing is rolled back")
        events.append(Event("Normal", "RequestIgnored", f"retry ({RETRY_ANNOTATION}={token}) ignored: nothing is rolled back"))
        return
    rejected = next((r for r in reversed(status.candidates)  # the candidate this very rollback rejected
                     if r.version == rollback.from_version and r.outcome == "Rejected" and r.reason == rollback.reason[:1024]), None)
    if rollback.track == "canary" and rejected is not None and status.candidate is None:
        why = (f"{RETRY_ANNOTATION}={token}: the rolled-back canary was candidate {rejected.version} ({rejected.outcome}), "
               "which is not retried: a new retraining result or alias version becomes the next candidate")
        _record_ignored(status, why)
        events.append(Event("Normal", "RequestIgnored", why))
        return
    status.rollback = None
    status.gates = []  # every webhook gate is asked again
    if rollback.track == "stable":
        status.observed_stable = None  # the spec's stable is served again (followed below, as a spec change)
        events.append(Event("Normal", "RetryRequested", f"{RETRY_ANNOTATION}={token}: stable {rollback.from_version} is served again"))
    else:
        status.canary = None  # the canary starts over from its first step
        events.append(Event("Normal", "RetryRequested", f"{RETRY_ANNOTATION}={token}: the canary starts over"))


def take_requests(annotations: dict[str, str], status: ModelDeploymentStatus) -> Pending:
    """The request annotations whose values are new, acknowledged in status as of this decision."""
    acknowledged = status.requests or Requests()
    fresh = {kind: value for kind, annotation in ANNOTATIONS.items()
             if (value := annotations.get(annotation)) and value != getattr(acknowledged, kind)}
    if fresh:
        status.requests = acknowledged.model_copy(update=fresh)
    return Pending(tokens=fresh)


def follow_pause(annotations: dict[str, str], status: ModelDeploymentStatus, now, events: list[Event]) -> None:
    """modelwarden.io/paused=true holds the canary's steps until it is removed (or set to anything
    else); the progress deadline starts over on resume (a pause is no lack of progress)."""
    wanted = (annotations.get(PAUSED_ANNOTATION) or "").strip().lower() == "true"
    if wanted == bool(status.paused):
        return
    status.paused = True if wanted else None
    if not wanted and status.canary_step is not None:
        status.step_requested_at = now
    if wanted:
        events.append(Event("Normal", "CanaryPaused", f"{PAUSED_ANNOTATION}=true: canary steps hold (a failing gate still aborts)"))
    else:
        events.append(Event("Normal", "CanaryResumed", f"{PAUSED_ANNOTATION} removed: canary steps go on"))


def needs_approval(md: ModelDeployment, status: ModelDeploymentStatus) -> bool:
    """The current step requires a person's approval and has not had it."""
    canary = md.spec.canary
    if canary is None or not canary.steps or status.canary_step is None:
        return False
    index = min(status.canary_step, len(canary.steps) - 1)
    return canary.steps[index].approval == StepApproval.REQUIRED and status.approved_step != index


def waiting_for_person(md: ModelDeployment, status: ModelDeploymentStatus, now) -> tuple[str, str] | None:
    """(reason, message) while the canary holds for a person: paused, or a step whose pause is over
    awaiting approval. None otherwise (a step still in its pause is not waiting for anyone yet)."""
    if status.paused:
        return "PauseRequested", f"paused ({PAUSED_ANNOTATION}=true): kubectl modelwarden resume"
    canary = md.spec.canary
    if not needs_approval(md, status) or canary is None or status.canary_step is None:
        return None
    step = canary.steps[min(status.canary_step, len(canary.steps) - 1)]
    started = status.step_started_at
    if started is None or now - started < step.pause:
        return None
    return "AwaitingApproval", f"step {status.canary_step + 1}/{len(canary.steps)} awaits approval: kubectl modelwarden approve"
