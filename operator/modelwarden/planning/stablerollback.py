"""Reverting the served stable version when a stable-track policy breaches, and the history
entries a stable version leaves when it stops serving. Pure."""

from __future__ import annotations

from modelwarden.api.deploymentstatus import ModelDeploymentStatus, RollbackStatus
from modelwarden.planning.trackmodels import history_entry, track_status
from modelwarden.planning.types import Event, TrackModel


def rollback_stable(status: ModelDeploymentStatus, verdicts, now, events: list[Event], breaches: list[str]) -> None:
    """Revert stable to the previous good version once per breach of a rollback-enabled stable policy."""
    since = status.rollback.at if status.rollback else None
    if status.stable is None:
        return
    # Only verdicts evaluated since this stable began to serve (a retry serves it again): older ones judged another time.
    serving = next((h.promoted_at for h in reversed(status.history)
                    if h.version == status.stable.version and h.retired_at is None), None)
    since = max((t for t in (since, serving) if t is not None), default=None)
    breaching = [v for v in verdicts if v.track == "stable" and v.rollback and v.breached and v.about(status.stable.version)
                 and (since is None or (v.evaluated_at is not None and v.evaluated_at > since))]
    if not breaching:
        return
    breaches.extend(v.name for v in breaching)
    reason = "; ".join(v.describe() for v in breaching)
    current = status.stable.version
    bad = {h.version for h in status.history if h.reason == "RolledBack" or h.retired_at and h.version == current}
    previous = next((h for h in reversed(status.history) if h.version != current and h.version not in bad), None)
    if previous is None:
        if not any(e.reason == "RollbackImpossible" for e in events):
            events.append(Event("Warning", "RollbackImpossible", f"stable {current} is failing but has no previous version: {reason}"))
        return
    retire_current(status, now, "RolledBack")
    target = TrackModel(previous.version, previous.model_uri, previous.resolved_uri or previous.model_uri,
                        previous.model_version, previous.run_id, previous.sha256)
    status.history.append(history_entry(target, now, "RollbackTarget"))
    status.rollback = RollbackStatus(track="stable", from_version=current, to_version=previous.version, reason=reason, at=now)
    status.stable = track_status(target)
    events.append(Event("Warning", "StableRolledBack", f"stable rolled back from {current} to {previous.version}: {reason}"))


def retire_current(status: ModelDeploymentStatus, now, reason: str) -> None:
    for entry in reversed(status.history):
        if status.stable and entry.version == status.stable.version and entry.retired_at is None:
            entry.retired_at = now
            entry.reason = reason if reason == "RolledBack" else entry.reason
            return
