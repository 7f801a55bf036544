"""Which model each track serves: spec URIs pinned to what the registry resolved them to, how that
is recorded in status and history (so a rollback returns to the exact version), and the
ModelResolved / ModelFetchFailed conditions. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelwarden.api.common import condition_true, set_condition
from modelwarden.api.modeldeployment import (
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentPhase,
    ModelDeploymentStatus,
    TrackStatus,
)
from modelwarden.contract import modeluri
from modelwarden.contract.modeluri import Resolution
from modelwarden.planning.types import Event, Plan, TrackModel
from modelwarden.routers import Split


def track_models(md: ModelDeployment, status: ModelDeploymentStatus,
                 resolutions: Mapping[str, Resolution | str]) -> tuple[dict[str, TrackModel], dict[str, str]]:
    """Each spec track's model, registry URIs pinned to what they resolved to. A track whose URI
    could not be resolved keeps the model its status records (nothing changes on the cluster);
    without one it is left out. Returns the models and, per track, why a URI is unresolved."""
    models: dict[str, TrackModel] = {}
    unresolved: dict[str, str] = {}
    for name in ("stable", "canary", "shadow"):
        track = getattr(md.spec, name)
        if track is None:
            continue
        uri = modeluri.parse(track.model_uri)
        if not uri.registry:
            models[name] = TrackModel(track.version or "", track.model_uri, track.model_uri, sha256=track.sha256)
            continue
        found = resolutions.get(track.model_uri)
        if isinstance(found, Resolution):
            models[name] = TrackModel(track.version or found.model_version or "", track.model_uri, found.resolved_uri,
                                      found.model_version, found.run_id, track.sha256)
            continue
        unresolved[name] = found or f"{track.model_uri} is not resolved yet"
        served = getattr(status, name)
        if served is not None and served.model_uri is not None:
            models[name] = TrackModel(served.version, served.model_uri, served.resolved_uri or served.model_uri,
                                      served.model_version, served.run_id, served.sha256)
    return models, unresolved


def unresolved_plan(md: ModelDeployment, status: ModelDeploymentStatus, unresolved: Mapping[str, str], now) -> Plan:
    """No stable model to serve yet (its registry URI never resolved): create nothing, say why."""
    generation = md.metadata.get("generation")
    already = any(c.type == "ModelResolved" and c.status.value == "False" for c in status.conditions)
    events = [] if already else [Event("Warning", "ModelResolveFailed", describe_problems(unresolved))]
    status.phase = ModelDeploymentPhase.PENDING
    status.conditions = set_condition(status.conditions, "ModelResolved", False, "ResolveFailed",
                                      describe_problems(unresolved), now, generation)
    status.conditions = set_condition(status.conditions, "Ready", False, "ModelNotResolved",
                                      "the stable model is not resolved", now, generation)
    status.message = f"waiting for the model: {describe_problems(unresolved)}"
    status.observed_generation = md.metadata.get("generation")
    return Plan(children=[], split=Split(), status=status.to_wire(), events=events, breaches=())


def describe_problems(problems: Mapping[str, str]) -> str:
    return "; ".join(f"{track}: {problem}" for track, problem in problems.items())


def track_status(model: TrackModel, **observed: Any) -> TrackStatus:
    return TrackStatus(version=model.version, model_uri=model.model_uri, resolved_uri=model.resolved_uri,
                       model_version=model.model_version, run_id=model.run_id, sha256=model.sha256, **observed)


def history_entry(model: TrackModel, now, reason: str) -> HistoryEntry:
    return HistoryEntry(version=model.version, model_uri=model.model_uri, resolved_uri=model.resolved_uri,
                        model_version=model.model_version, run_id=model.run_id, sha256=model.sha256, promoted_at=now,
                        reason=reason)


def served_model(track: TrackStatus) -> TrackModel:
    """The model a status track records (a rollback target, the promoted canary)."""
    assert track.model_uri is not None
    return TrackModel(track.version, track.model_uri, track.resolved_uri or track.model_uri, track.model_version, track.run_id,
                      track.sha256)


def set_model_conditions(md: ModelDeployment, status: ModelDeploymentStatus, unresolved: Mapping[str, str],
                          fetch_failures: Mapping[str, str], now, events: list[Event]) -> None:
    """ModelResolved (every registry URI of the spec resolved) and ModelFetchFailed (a track's
    storage initializer failed: its pods never start, so it gets no traffic), announced once per change."""
    generation = md.metadata.get("generation")
    was_resolved = condition_true(status.conditions, "ModelResolved") or not any(
        c.type == "ModelResolved" for c in status.conditions)
    if unresolved:
        if was_resolved:
            events.append(Event("Warning", "ModelResolveFailed", describe_problems(unresolved)))
        status.conditions = set_condition(status.conditions, "ModelResolved", False, "ResolveFailed", describe_problems(unresolved), now, generation)
    else:
        status.conditions = set_condition(status.conditions, "ModelResolved", True, "Resolved", "every track's model is resolved", now, generation)
    failed_before = next((c for c in status.conditions if c.type == "ModelFetchFailed" and c.status.value == "True"), None)
    message = describe_problems(fetch_failures)
    if fetch_failures:
        if failed_before is None or failed_before.message != message:
            events.append(Event("Warning", "ModelFetchFailed", message))
        status.conditions = set_condition(status.conditions, "ModelFetchFailed", True, "StorageInitializerFailed", message, now, generation)
    else:
        status.conditions = set_condition(status.conditions, "ModelFetchFailed", False, "Fetched", "", now, generation)
