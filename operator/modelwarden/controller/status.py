"""Pure status helpers: compute changes from the current status; an empty dict means no write."""

from __future__ import annotations

import datetime
from typing import Any

INVALID_SPEC = "InvalidSpec"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return conditions with one condition set; lastTransitionTime moves only when status flips."""
    result = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(condition)
            continue
        found = True
        transition = condition.get("lastTransitionTime") if condition.get("status") == status else None
        result.append(_condition(type_, status, reason, message, transition or _ts(now), generation))
    if not found:
        result.append(_condition(type_, status, reason, message, _ts(now), generation))
    return result


def _condition(type_: str, status: str, reason: str, message: str, at: str, generation: int | None) -> dict[str, Any]:
    condition = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": at}
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def _ts(now: datetime.datetime) -> str:
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_status_patch(
    status: dict[str, Any], generation: int | None, error: str | None, now: datetime.datetime, failed_phase: str
) -> dict[str, Any]:
    """Status fields recording whether the spec is valid; only the fields that change."""
    conditions = set_condition(
        list(status.get("conditions") or []),
        INVALID_SPEC,
        "True" if error else "False",
        "ValidationFailed" if error else "Valid",
        error or "the spec is valid",
        now,
        generation,
    )
    desired: dict[str, Any] = {"conditions": conditions, "observedGeneration": generation}
    if error:
        desired["phase"] = failed_phase
    elif not status.get("phase"):
        desired["phase"] = "Pending"
    return {key: value for key, value in desired.items() if status.get(key) != value}


def status_changes(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from current to desired status: changed keys, and None for keys to remove."""
    keys = set(current) | set(desired)
    return {k: desired.get(k) for k in keys if current.get(k) != desired.get(k)}
