"""Pure status helpers: compute changes from the current status; an empty dict means no write."""

from __future__ import annotations

import datetime
from typing import Any

from modelwarden.api.common import Condition, set_condition

INVALID_SPEC = "InvalidSpec"


def spec_status_patch(
    status: dict[str, Any], generation: int | None, error: str | None, now: datetime.datetime, failed_phase: str
) -> dict[str, Any]:
    """Status fields recording whether the spec is valid; only the fields that change."""
    current = [Condition.model_validate(c) for c in status.get("conditions") or []]
    conditions = set_condition(current, INVALID_SPEC, bool(error), "ValidationFailed" if error else "Valid",
                               error or "the spec is valid", now, generation)
    desired: dict[str, Any] = {"conditions": [c.to_wire() for c in conditions], "observedGeneration": generation}
    if error:
        desired["phase"] = failed_phase
    elif not status.get("phase"):
        desired["phase"] = "Pending"
    return {key: value for key, value in desired.items() if status.get(key) != value}


def status_changes(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from current to desired status: changed keys, and None for keys to remove."""
    keys = set(current) | set(desired)
    return {k: desired.get(k) for k in keys if current.get(k) != desired.get(k)}
