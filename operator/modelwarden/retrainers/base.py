"""The one seam every retraining backend implements: launch a run under a deterministic name, say
how it is doing, read what it produced. The DriftPolicy decisions (planning/policy.py) never know
which backend runs; they see JobStates and JobResults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from modelwarden.planning.retraining import JobResult, JobState, RetrainRun
from modelwarden.registry.base import ModelRegistry

RegistryFactory = Callable[[str, "str | None"], ModelRegistry]


class BackendUnavailable(RuntimeError):
    """The backend could not be asked now (unreachable, 5xx, a missing Secret): the run is taken as
    still running and asked again next tick; a launch is not recorded and decided again."""


@dataclass(frozen=True)
class ResultSource:
    """Where a run's result is looked up when the run itself cannot carry it: the MLflow model
    version tagged with the run's breach id (contract/retraining.py)."""

    tracking_uri: str | None
    token: str | None
    registry: RegistryFactory


class Retrainer(Protocol):
    noun: str  # what Events call a run: Job, Workflow, Airflow DAG run, Kubeflow run
    poll_seconds: float | None  # how often a running run must be asked (None: a watch wakes the policy)

    def launch(self, run: RetrainRun) -> None:
        """Start the run named run.name; one of that name that exists already counts as launched.
        Raises with a reason when the backend refuses it or cannot be reached."""

    def runs(self, policy: str) -> tuple[JobState, ...]:
        """The policy's runs its backend knows of (by their deterministic names), so a run launched
        while the status write recording it was lost is adopted, never launched twice. Raises
        BackendUnavailable when the backend cannot say."""

    def observe(self, name: str) -> JobState | None:
        """The run as its backend reports it now; None when it does not exist. Raises
        BackendUnavailable when the backend cannot say."""

    def result(self, name: str) -> JobResult:
        """What a succeeded run produced, or why nothing (`problem`), or that it cannot be read now (`unavailable`)."""
