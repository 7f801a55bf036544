"""Webhook gates of a canary as plan() decides them, pure: which gates wait (so the controller asks
them), what their answers mean, and the rollout's context they are sent.

A gate waits from the moment its point of the rollout is reached (status.gates[].waitingSince,
persisted); only an answer given after that counts, and a 2xx is recorded once (passedAt), so a
restart never asks a passed gate again. Rollout gates belong to the decision that starts a canary
(one added to the spec later waits for the next canary) and keep it at 0% of traffic:
confirm-rollout waits from the start, pre-rollout from when the canary's pods are ready (so it can
test them). confirm-promotion keeps the canary at its last step. A gate holding longer than its
holdTimeout rolls the canary back; a rollback or a retry forgets the gates (a retry asks again)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelwarden.api.deploymentstatus import GateStatus, ModelDeploymentStatus
from modelwarden.api.duration import format_duration
from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.api.webhookgates import WebhookGate, WebhookGateType
from modelwarden.planning.types import Event, TrackModel

ROLLOUT = (WebhookGateType.CONFIRM_ROLLOUT, WebhookGateType.PRE_ROLLOUT)
PROMOTION = (WebhookGateType.CONFIRM_PROMOTION,)


@dataclass(frozen=True)
class GateAnswer:
    """What one call to a gate returned (the controller makes the calls)."""

    name: str
    version: str  # the canary version the call was about
    at: datetime.datetime  # when the answer (or the failure) came
    code: int | None  # HTTP status; None: no answer (timeout, connection refused, refused by egress rules)
    message: str

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


def _gates(md: ModelDeployment, types: tuple[WebhookGateType, ...]) -> list[WebhookGate]:
    return [g for g in (md.spec.canary.webhooks if md.spec.canary else []) if g.type in types]


def _state(status: ModelDeploymentStatus, gate: WebhookGate, version: str) -> GateStatus | None:
    return next((s for s in status.gates if s.name == gate.name and s.version == version), None)


def forget_other_versions(status: ModelDeploymentStatus, version: str | None) -> None:
    """A new canary version (or none) asks every gate again."""
    status.gates = [s for s in status.gates if s.version == version]


def waiting(md: ModelDeployment, status: ModelDeploymentStatus) -> list[WebhookGate]:
    """The gates to ask now, from persisted status alone: waiting (a pre-rollout gate once the
    canary's pods were ready) and not passed; none for a rolled-back canary."""
    if status.canary is None or md.spec.canary is None or status.rollback is not None:
        return []
    due = []
    for gate in md.spec.canary.webhooks:
        state = _state(status, gate, status.canary.version)
        if state is not None and state.waiting_since is not None and state.passed_at is None:
            due.append(gate)
    return due


def holds(md: ModelDeployment, model: TrackModel, status: ModelDeploymentStatus, types: tuple[WebhookGateType, ...],
          answers: Mapping[str, GateAnswer], now: datetime.datetime, events: list[Event], canary_ready: bool = True) -> bool:
    """Whether the gates of these types still hold the rollout; records their answers. Gates of a
    point reached now start waiting (the next reconcile asks them); rollout gates only in the
    decision that starts the canary."""
    holding = False
    for gate in _gates(md, types):
        state = _state(status, gate, model.version)
        if state is None:
            if gate.type in ROLLOUT and status.canary_started_at != now:
                continue  # added to the spec after this canary started: it asks the next one
            state = GateStatus(name=gate.name, type=gate.type.value, version=model.version)
            status.gates = [*status.gates, state]
        if state.passed_at is not None:
            continue
        if state.waiting_since is None and (gate.type != WebhookGateType.PRE_ROLLOUT or canary_ready):
            state.waiting_since = now
        answer = answers.get(gate.name)
        if answer is not None and state.waiting_since is not None and answer.version == model.version \
                and answer.at >= state.waiting_since:
            state.last_answer_at, state.last_code, state.message = answer.at, answer.code, answer.message[:256]
            if answer.ok:
                state.passed_at = answer.at
                events.append(Event("Normal", "GatePassed", f"{gate.type.value} gate {gate.name} passed for canary "
                                                            f"{model.version} ({answer.message})"))
                continue
        holding = True
    return holding


def expired(md: ModelDeployment, status: ModelDeploymentStatus, now: datetime.datetime) -> str | None:
    """Why the canary is rolled back: a gate held longer than its holdTimeout."""
    if status.canary is None or md.spec.canary is None:
        return None
    for gate in md.spec.canary.webhooks:
        state = _state(status, gate, status.canary.version)
        if gate.hold_timeout is not None and state is not None and state.passed_at is None \
                and state.waiting_since is not None and now - state.waiting_since >= gate.hold_timeout:
            said = f" (last: {state.message})" if state.message else " (never answered)"
            return f"{gate.type.value} gate {gate.name} held for {format_duration(gate.hold_timeout)}{said}"
    return None


def holding_gate(md: ModelDeployment, status: ModelDeploymentStatus) -> GateStatus | None:
    """The gate the rollout waits for now, if any (for phase Paused and the Paused condition)."""
    if status.canary is None:
        return None
    names = {g.name for g in (md.spec.canary.webhooks if md.spec.canary else [])}
    return next((s for s in status.gates if s.name in names and s.version == status.canary.version and s.passed_at is None), None)


def rollout_confirmed(md: ModelDeployment, status: ModelDeploymentStatus) -> bool:
    """Every rollout gate the current canary started with passed (or it had none): it may get traffic."""
    if status.canary is None:
        return True
    for gate in _gates(md, ROLLOUT):
        state = _state(status, gate, status.canary.version)
        if state is not None and state.passed_at is None:
            return False
    return True


def context(md: ModelDeployment, status: ModelDeploymentStatus, gate: WebhookGate) -> dict[str, Any]:
    """The JSON body a gate receives."""
    meta = md.metadata
    track = lambda t: {"version": t.version, "modelUri": t.resolved_uri or t.model_uri} if t else None  # noqa: E731
    return {
        "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
        "gate": gate.name, "type": gate.type.value, "phase": status.phase.value if status.phase else None,
        "canary": track(status.canary), "stable": track(status.stable), "step": status.step,
        "weights": status.weights.model_dump(), "metadata": dict(gate.metadata),
    }
