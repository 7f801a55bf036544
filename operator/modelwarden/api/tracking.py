"""Where a DriftPolicy's evaluations are also recorded for people: an MLflow experiment."""

from __future__ import annotations

from pydantic import Field

from modelwarden.api.common import ApiModel


class MlflowTracking(ApiModel):
    """Each evaluation as MLflow metrics of one run per (model, version, policy), on the operator's
    tracking server (--mlflow-tracking-uri, MLFLOW_TRACKING_TOKEN)."""

    experiment: str | None = Field(default=None, min_length=1, max_length=500)
    """The experiment the runs go to (created when missing); default modelwarden/NAMESPACE/MODEL."""


class TrackingSpec(ApiModel):
    """Opt-in records of every evaluation outside the cluster."""

    mlflow: MlflowTracking | None = None
    """Log each evaluation's check values (step = its time in seconds), its verdict (a tag) and the
    policy's settings (params) to MLflow, beside the model's training runs."""
