"""The checks of a DriftPolicy spec: data drift, quality and serving bounds, the comparison with
another track, the outlier rate and custom PromQL checks.

Bounds that could never fail (psi threshold 0, accuracy min 0) or never pass (accuracy min 1.5,
error_rate max -0.1) are rejected: a check that cannot change its verdict is a mistake. The API
server rejects them at admission (CEL rules); the same rules are checked here for the operator.
"""

from __future__ import annotations

import math
import re
import string
from enum import Enum
from typing import Literal

import promql_parser
from pydantic import Field, field_validator, model_validator

from modelwarden.api.common import ApiModel, Track, cel_rules, cel_string

_MIN_LE_MAX = (
    "!has(self.min) || !has(self.max) || self.min <= self.max",
    "min must be less than or equal to max",
    ".min",
)
_MIN_OR_MAX = ("has(self.min) || has(self.max)", "at least one of min or max is required", "")


class DriftMethod(str, Enum):
    """Statistic used to compare histograms."""

    PSI = "psi"
    COMBINED = "combined"  # ks and chi2 on the same bins (location, scale and shape)
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


P_VALUE_METHODS = ("combined", "ks", "chi2")
# The largest value each bounded distance takes (Jensen–Shannon with the natural log: √ln 2).
DISTANCE_MAXIMA = {"jensenshannon": math.sqrt(math.log(2)), "hellinger": 1.0}
_METHOD = "(has(self.method) ? self.method : 'combined')"
DEFAULT_MIN_EFFECT = 0.05  # DriftSpec.min_effect for ks and chi2
# The distances' default thresholds (analysis.drift.DEFAULT_THRESHOLDS reads them from here).
DISTANCE_DEFAULTS = {"psi": 0.25, "jensenshannon": 0.1, "wasserstein": 0.1, "hellinger": 0.1}


def _default_threshold_cel() -> str:
    """The default threshold of the policy's method, as CEL (p-value methods take no warnThreshold)."""
    expression = "0.01"
    for method, default in DISTANCE_DEFAULTS.items():
        expression = f"({_METHOD} == '{method}' ? {default!r} : {expression})"
    return expression


def _threshold_rules() -> list[tuple[str, str, str]]:
    methods = "[" + ", ".join(f"'{m}'" for m in P_VALUE_METHODS) + "]"
    rules = [
        (f"!has(self.threshold) || !({_METHOD} in {methods}) || (self.threshold > 0.0 && self.threshold < 1.0)",
         "threshold is a significance level for combined, ks and chi2: it must be greater than 0 and less than 1 "
         "(alpha 1 or more calls every feature drifted)", ".threshold"),
        (f"!has(self.threshold) || {_METHOD} in {methods} || self.threshold > 0.0",
         "threshold must be greater than 0 for a distance method: every distance is at least 0, so every feature "
         "would drift", ".threshold"),
    ]
    for method, maximum in DISTANCE_MAXIMA.items():
        rules.append((f"!has(self.threshold) || {_METHOD} != '{method}' || self.threshold <= {maximum!r}",
                      f"threshold must be at most {maximum:.4g} for {method}: the distance never exceeds it, so no "
                      "feature could drift", ".threshold"))
    return rules


class DriftSpec(ApiModel):
    """Data drift of feature and prediction histograms."""

    model_config = cel_rules(
        *_threshold_rules(),
        (f"!has(self.minEffect) || {_METHOD} in [{', '.join(repr(m) for m in P_VALUE_METHODS)}]",
         "minEffect applies to ks and chi2: a distance's threshold is already an effect size", ".minEffect"),
        (f"!has(self.warnThreshold) || !({_METHOD} in [{', '.join(repr(m) for m in P_VALUE_METHODS)}])",
         "warnThreshold applies to the distances (psi, jensenshannon, wasserstein, hellinger), not to ks or chi2",
         ".warnThreshold"),
        (f"!has(self.warnThreshold) || self.warnThreshold < (has(self.threshold) ? self.threshold : {_default_threshold_cel()})",
         "warnThreshold must be below threshold: a distance that drifts is a Fail, not a warning", ".warnThreshold"),
        ("!has(self.features) || !('*' in self.features) || self.features.size() == 1",
         "features: \"*\" already means every feature; list names or \"*\", not both", ".features"),
    )

    # A set: the API server refuses a repeated name itself (a CEL rule would cost n² over 10000 items).
    features: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=10000,
                                json_schema_extra={"x-kubernetes-list-type": "set"})
    """Feature names to test; "*" means every feature the model exports."""
    method: DriftMethod = DriftMethod.COMBINED
    """combined (default: ks and chi2 on the same bins, so shifts, spread and shape changes are all seen, see docs/statistics.md), ks, chi2, psi, jensenshannon, wasserstein or hellinger."""
    threshold: float | None = Field(default=None, ge=0)
    """For psi/jensenshannon/wasserstein/hellinger: a feature drifts when the distance reaches it (defaults 0.25/0.1/0.1/0.1; greater than 0, at most 0.8326 for jensenshannon and 1 for hellinger). For combined/ks/chi2: a cap on the significance level of the corrected p-values, which is otherwise each evaluation's share of spec.alpha (between 0 and 1)."""
    min_effect: float | None = Field(default=None, ge=0)
    """For ks and chi2 (default 0.05): a feature drifts only when its change is also at least this large — the Wasserstein distance in units of the reference's standard deviation for a numeric feature, the total variation distance for a categorical one. Huge windows make irrelevant changes significant; this keeps them from acting."""
    warn_threshold: float | None = Field(default=None, gt=0)
    """For the distances: a feature whose distance reaches this but not threshold makes the check a Warning, which never acts (e.g. psi 0.1 to watch, 0.25 to act)."""
    correction: Correction = Correction.FDR
    """Multiple-testing correction for p-value methods."""
    drift_share: float | None = Field(default=None, gt=0, le=1)
    """The dataset drifts when at least this share of tested features drift; unset means any single drifted feature."""
    predictions: bool = True
    """Also test the prediction distribution (a drifted prediction fails the check on its own)."""

    @field_validator("features")
    @classmethod
    def _features(cls, features: list[str]) -> list[str]:
        if any(not name for name in features):
            raise ValueError("feature names must not be empty")
        if len(set(features)) != len(features):
            raise ValueError("features must not repeat a name")
        if "*" in features and len(features) > 1:
            raise ValueError('"*" already means every feature; list names or "*", not both')
        return features

    @model_validator(mode="after")
    def _threshold(self) -> "DriftSpec":
        threshold, method = self.threshold, self.method.value
        if self.min_effect is not None and method not in P_VALUE_METHODS:
            raise ValueError("minEffect applies to ks and chi2: a distance's threshold is already an effect size")
        if self.warn_threshold is not None:
            if method in P_VALUE_METHODS:
                raise ValueError("warnThreshold applies to the distances (psi, jensenshannon, wasserstein, hellinger), not to ks or chi2")
            if self.warn_threshold >= (threshold if threshold is not None else DISTANCE_DEFAULTS[method]):
                raise ValueError("warnThreshold must be below threshold: a distance that drifts is a Fail, not a warning")
        if threshold is None:
            return self
        if method in P_VALUE_METHODS and not 0 < threshold < 1:
            raise ValueError(f"threshold: the significance level alpha of {method} must be greater than 0 and less than 1")
        if method not in P_VALUE_METHODS and threshold <= 0:
            raise ValueError(f"threshold: must be greater than 0 for {method} (every distance is at least 0)")
        if threshold > DISTANCE_MAXIMA.get(method, math.inf):
            raise ValueError(f"threshold: must be at most {DISTANCE_MAXIMA[method]:.4g} for {method}")
        return self


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
    # Without labels: a binary classifier's metrics at its decision threshold, estimated from the
    # prediction_value histogram and the profile's calibration (docs/statistics.md).
    ESTIMATED_ACCURACY = "estimated_accuracy"
    ESTIMATED_PRECISION = "estimated_precision"
    ESTIMATED_RECALL = "estimated_recall"
    ESTIMATED_F1 = "estimated_f1"


ESTIMATED_METRICS = ("estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1")
# Metrics that are shares, in [0, 1]; every metric is at least 0, latencies more than 0.
RATIO_METRICS = ("accuracy", "precision", "recall", "f1", "error_rate", *ESTIMATED_METRICS)
PER_CLASS_METRICS = ("precision", "recall", "f1")
LATENCY_METRICS = ("latency_p50", "latency_p95", "latency_p99")
DEFAULT_MAX_CALIBRATION_ERROR = 0.02


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class PerformanceCheck(ApiModel):
    """A bound on one quality or serving metric."""

    model_config = cel_rules(
        _MIN_OR_MAX,
        _MIN_LE_MAX,
        ("!has(self.min) || self.min > 0.0",
         "min must be greater than 0: the metric is never negative, so a lower bound of 0 or less never fails", ".min"),
        (f"!has(self.min) || !(self.metric in {_cel_list(RATIO_METRICS)}) || self.min <= 1.0",
         "min must be at most 1 for accuracy, precision, recall, f1, error_rate and the estimated_ metrics: they never "
         "exceed 1, so a larger min always fails", ".min"),
        (f"!has(self.max) || (self.metric in {_cel_list(LATENCY_METRICS)} ? self.max > 0.0 : self.max >= 0.0)",
         "max must not be negative (and must be greater than 0 for latencies): a bound below every possible "
         "value always fails", ".max"),
        (f"!has(self.max) || !(self.metric in {_cel_list(RATIO_METRICS)}) || self.max < 1.0",
         "max must be less than 1 for accuracy, precision, recall, f1, error_rate and the estimated_ metrics: they "
         "never exceed 1, so a max of 1 or more never fails", ".max"),
        (f"!has(self.class) || self.metric in {_cel_list(PER_CLASS_METRICS)}",
         "class applies to precision, recall and f1 only", ".class"),
        (f"!has(self.maxCalibrationError) || self.metric in {_cel_list(ESTIMATED_METRICS)}",
         "maxCalibrationError applies to the estimated_ metrics only", ".maxCalibrationError"),
    )

    metric: PerformanceMetric
    """Which metric."""
    class_label: str | None = Field(default=None, alias="class", min_length=1, max_length=253)
    """For precision/recall/f1: one class. Omitted: a binary model's positive class (the profile's
    positiveClass, else 1 or true, as scikit-learn), a multiclass model's macro average."""
    min: float | None = None
    """Fail below this value (greater than 0; at most 1 for ratios)."""
    max: float | None = None
    """Fail above this value (at least 0, more than 0 for latencies; less than 1 for ratios)."""
    max_calibration_error: float | None = Field(default=None, gt=0, le=1)
    """For estimated_* metrics: how far the estimate from scores may be from the labelled value
    of the same metric on the profile's own rows before the check refuses to estimate (an Error
    verdict: the model's scores are not calibrated enough); default 0.02, greater than 0, at most 1."""

    @property
    def calibration_tolerance(self) -> float:
        """maxCalibrationError, or its default."""
        return DEFAULT_MAX_CALIBRATION_ERROR if self.max_calibration_error is None else self.max_calibration_error

    @model_validator(mode="after")
    def _bounds(self) -> "PerformanceCheck":
        metric = self.metric.value
        if self.min is None and self.max is None:
            raise ValueError("at least one of min or max is required")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must be less than or equal to max")
        if self.min is not None and (self.min <= 0 or (metric in RATIO_METRICS and self.min > 1)):
            raise ValueError(f"min: {self.min:g} can never change the verdict of {metric}")
        if self.max is not None and (self.max < 0 or (metric in LATENCY_METRICS and self.max == 0)
                                     or (metric in RATIO_METRICS and self.max >= 1)):
            raise ValueError(f"max: {self.max:g} can never change the verdict of {metric}")
        if self.class_label is not None and metric not in PER_CLASS_METRICS:
            raise ValueError(f"class applies to precision, recall and f1 only, not {metric}")
        if self.max_calibration_error is not None and metric not in ESTIMATED_METRICS:
            raise ValueError(f"maxCalibrationError applies to the estimated_ metrics only, not {metric}")
        return self


ComparisonMetric = Literal["accuracy", "error_rate"]


class ComparisonSpec(ApiModel):
    """Judge the policy's track against another track with a two-proportion z-test."""

    model_config = cel_rules(
        ("!has(self.metrics) || self.metrics.all(m, self.metrics.filter(n, n == m).size() == 1)", "metrics must not repeat a metric", ".metrics"),
    )

    track: Track = Track.STABLE
    """The baseline track."""
    metrics: list[ComparisonMetric] = Field(default_factory=lambda: ["accuracy", "error_rate"], min_length=1, max_length=2)
    """accuracy and/or error_rate."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Significance level of the one-sided test for being worse than the baseline."""

    @field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: list[str]) -> list[str]:
        if len(set(metrics)) != len(metrics):
            raise ValueError("metrics must not repeat a metric")
        return metrics


class OutlierSpec(ApiModel):
    """Rate of predictions flagged as outliers by the server (|z| beyond the profile's threshold)."""

    max_rate: float = Field(ge=0, lt=1)
    """Fail when the outlier share of predictions exceeds this (less than 1: no share exceeds 1)."""


class AgreementSpec(ApiModel):
    """How often the judged track's model predicts the same class as the stable's model on the very
    same rows: a shadow served with pairWithStable scores every mirrored request with both."""

    min_rate: float = Field(gt=0, le=1)
    """Fail when the share of rows on which both models predict the same class is surely below
    this (its upper confidence bound at the check's level is), e.g. 0.9."""


# The variables of a custom query (prometheus.queries.render_template substitutes them).
TEMPLATE_VARIABLES = ("model", "track", "version", "namespace", "window", "selector")
# What render_template reads as a variable: an unknown name is an error there.
TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
# Representative values to parse a query with (as render_template would substitute them).
_SAMPLE_VALUES = {"model": "m", "track": "stable", "version": "1", "namespace": "ml", "window": "30m",
                  "selector": 'model="m",track="stable",namespace="ml"'}
_IDENTIFIER = string.ascii_uppercase + string.ascii_lowercase + "_"


def _char_class(chars: list[str]) -> str:
    ranges, i = [], 0
    while i < len(chars):
        j = i
        while j + 1 < len(chars) and ord(chars[j + 1]) == ord(chars[j]) + 1:
            j += 1
        ranges.append(chars[i] if j == i else chars[i] + ("-" if j > i + 1 else "") + chars[j])
        i = j + 1
    return "[" + "".join(ranges) + "]"


def _not_one_of(words: set[str], allow_empty: bool = False) -> str:
    """An RE2 pattern for every identifier except the given words (RE2 has no lookahead): a trie
    whose every branch either leaves the words or runs past their end."""
    alternatives = [""] if allow_empty and "" not in words else []
    firsts = sorted({w[0] for w in words if w})
    alternatives.append(_char_class([c for c in _IDENTIFIER if c not in firsts]) + "[A-Za-z_]*")
    for first in firsts:
        alternatives.append(first + _not_one_of({w[1:] for w in words if w and w[0] == first}, True))
    return "(?:" + "|".join(alternatives) + ")"


UNKNOWN_VARIABLE = r"\{\{\s*" + _not_one_of(set(TEMPLATE_VARIABLES)) + r"\s*\}\}"
_KNOWN = ", ".join("{{ %s }}" % v for v in TEMPLATE_VARIABLES)
_BRACKETS = ("()", "[]", "{}")


def _balanced(expr: str) -> str:
    """CEL: each kind of bracket opens as often as it closes (only checked for queries without
    string literals, where a bracket inside a label value would be legitimate)."""
    return " && ".join(f"size({expr}.replace('{o}', '')) == size({expr}.replace('{c}', ''))" for o, c in _BRACKETS)


def check_promql(query: str) -> str:
    """The query with sample values substituted, parsed as PromQL (by promql-parser, the Rust
    parser of GreptimeDB that follows Prometheus's grammar); a ValueError names what is wrong."""
    unknown = sorted({name for name in TEMPLATE_VARIABLE.findall(query) if name not in _SAMPLE_VALUES})
    if unknown:
        raise ValueError(f"unknown template variable {{{{ {unknown[0]} }}}}; known: {_KNOWN}")
    rendered = TEMPLATE_VARIABLE.sub(lambda m: _SAMPLE_VALUES[m.group(1)], query)
    try:
        expr = promql_parser.parse(rendered)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"not valid PromQL: {exc}") from None
    while type(expr).__name__ == "ParenExpr":
        expr = expr.expr
    if type(expr).__name__ in ("MatrixSelector", "SubqueryExpr", "StringLiteral"):
        raise ValueError("must return an instant vector or a number, not a range vector or a string "
                         "(wrap a range in a function such as rate(...) or avg_over_time(...))")
    return query


class CustomCheck(ApiModel):
    """A PromQL query with bounds; {{ model }}, {{ track }}, {{ version }}, {{ namespace }}, {{ window }} and {{ selector }} are substituted (label values escaped)."""

    model_config = cel_rules(_MIN_OR_MAX, _MIN_LE_MAX)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$", max_length=63)
    """Check name, unique within the policy."""
    query: str = Field(
        # 2048 characters: the API server's cost budget for the template-variable rule.
        min_length=1, max_length=2048,
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": f"!self.matches({cel_string(UNKNOWN_VARIABLE)})",
             "message": f"unknown template variable: the known ones are {_KNOWN}"},
            {"rule": f"self.contains('\"') || self.contains(\"'\") || self.contains('`') || ({_balanced('self')})",
             "message": "not valid PromQL: unbalanced parentheses, brackets or braces"},
        ]},
    )
    """PromQL returning one value (an instant vector or a number); parsed by the operator, which
    reports a query it cannot parse as condition InvalidSpec."""
    min: float | None = None
    """Fail below this value."""
    max: float | None = None
    """Fail above this value."""

    @field_validator("query")
    @classmethod
    def _query(cls, query: str) -> str:
        return check_promql(query)
