"""The checks of a DriftPolicy spec: data drift, quality and serving bounds, the comparison with
another track, the outlier rate and custom PromQL checks."""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from modelwarden.api.common import ApiModel, Track, cel_rules

_MIN_LE_MAX = (
    "!has(self.min) || !has(self.max) || self.min <= self.max",
    "min must be less than or equal to max",
    ".min",
)
_MIN_OR_MAX = ("has(self.min) || has(self.max)", "at least one of min or max is required", "")


class DriftMethod(str, Enum):
    """Statistic used to compare histograms."""

    PSI = "psi"
    KS = "ks"
    CHI2 = "chi2"
    JENSEN_SHANNON = "jensenshannon"
    WASSERSTEIN = "wasserstein"
    HELLINGER = "hellinger"


class Correction(str, Enum):
    """Multiple-testing correction across features (for the p-value methods ks and chi2)."""

    FDR = "fdr"  # Benjamini–Hochberg false discovery rate
    BONFERRONI = "bonferroni"
    NONE = "none"


class DriftSpec(ApiModel):
    """Data drift of feature and prediction histograms."""

    features: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=10000)
    """Feature names to test; "*" means every feature the model exports."""
    method: DriftMethod = DriftMethod.KS
    """ks (default: detects small shifts among many features, see docs/statistics.md), chi2, psi, jensenshannon, wasserstein or hellinger."""
    threshold: float | None = Field(default=None, ge=0)
    """For psi/jensenshannon/wasserstein/hellinger: a feature drifts when the distance reaches it (defaults 0.25/0.1/0.1/0.1). For ks/chi2: the significance level alpha of the corrected p-values (default 0.01)."""
    correction: Correction = Correction.FDR
    """Multiple-testing correction for p-value methods."""
    drift_share: float | None = Field(default=None, gt=0, le=1)
    """The dataset drifts when at least this share of tested features drift; unset means any single drifted feature."""
    predictions: bool = True
    """Also test the prediction distribution (a drifted prediction fails the check on its own)."""


class PerformanceMetric(str, Enum):
    """Quality and serving metrics computed from the metrics contract."""

    ACCURACY = "accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    F1 = "f1"
    MSE = "mse"
    MAE = "mae"
    RMSE = "rmse"
    LATENCY_P50 = "latency_p50"
    LATENCY_P95 = "latency_p95"
    LATENCY_P99 = "latency_p99"
    ERROR_RATE = "error_rate"


class PerformanceCheck(ApiModel):
    """A bound on one quality or serving metric."""

    model_config = cel_rules(_MIN_OR_MAX, _MIN_LE_MAX)

    metric: PerformanceMetric
    """Which metric."""
    class_label: str | None = Field(default=None, alias="class", max_length=253)
    """For precision/recall/f1: one class; omitted means the macro average over classes."""
    min: float | None = None
    """Fail below this value."""
    max: float | None = None
    """Fail above this value."""


class ComparisonSpec(ApiModel):
    """Judge the policy's track against another track with a two-proportion z-test."""

    track: Track = Track.STABLE
    """The baseline track."""
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "error_rate"], min_length=1, max_length=2)
    """accuracy and/or error_rate."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level of the one-sided test for being worse than the baseline."""


class OutlierSpec(ApiModel):
    """Rate of predictions flagged as outliers by the server (|z| beyond the profile's threshold)."""

    max_rate: float = Field(ge=0, le=1)
    """Fail when the outlier share of predictions exceeds this."""


class CustomCheck(ApiModel):
    """A PromQL query with bounds; {{ model }}, {{ track }}, {{ version }}, {{ namespace }}, {{ window }} are substituted (label values escaped)."""

    model_config = cel_rules(_MIN_OR_MAX, _MIN_LE_MAX)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$", max_length=63)
    """Check name, unique within the policy."""
    query: str = Field(min_length=1, max_length=4096)
    """PromQL returning one value."""
    min: float | None = None
    """Fail below this value."""
    max: float | None = None
    """Fail above this value."""
