"""The seam between the operator and where evaluations are recorded for people (MLflow)."""

from __future__ import annotations

from typing import Protocol

from modelwarden.planning.tracking import TrackingRecord


class EvaluationSink(Protocol):
    def log(self, record: TrackingRecord) -> str:
        """Record one evaluation; returns the run it went to. Raises RegistryError (RegistryUnavailable
        when it is worth trying again with the next evaluation)."""
        ...
