"""The outliers check: a missing outlier counter (a model served without a profile) is
InsufficientData, never a rate of 0 that passes; a real 0 from a server that exports it passes."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from modelwarden.analysis.judge import Kind, Observations, Side, TrackWindow, WindowPart, judge
from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.prometheus.collect import Target, evaluate
from modelwarden.prometheus.provider import InstantVector
from modelwarden.prometheus.queries import QUANTITY_LABEL

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _spec(max_rate: float = 0.05, min_samples: int = 1000) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate(
        {"targetRef": {"name": "m"}, "outliers": {"maxRate": max_rate}, "minSamples": min_samples}
    )


def _outliers(counters: dict[str, float] | None, spec: DriftPolicySpec | None = None):
    evaluation = judge(spec or _spec(), Observations(TrackWindow(counters=counters)), NOW).evaluation
    (check,) = [r for r in evaluation.results if r.check == "outliers/rate"]
    return check, evaluation.verdict


def test_missing_outlier_counter_is_insufficient_data_not_pass():
    check, verdict = _outliers({"predictions": 5000.0})
    assert check.verdict is Verdict.INSUFFICIENT_DATA and verdict is Verdict.INSUFFICIENT_DATA
    assert "not exported" in check.message and "without a reference profile" in check.message
    assert check.value is None and check.samples == 5000


def test_missing_outlier_counter_is_never_a_verdict_however_many_predictions():
    check, _ = _outliers({"predictions": 1e9}, _spec(max_rate=0.0, min_samples=1))
    assert check.verdict is Verdict.INSUFFICIENT_DATA


@pytest.mark.parametrize("counters", [None, {}])
def test_no_counters_at_all_is_insufficient_data(counters):
    check, _ = _outliers(counters)
    assert check.verdict is Verdict.INSUFFICIENT_DATA


def test_an_exported_zero_passes():
    check, verdict = _outliers({"predictions": 5000.0, "outliers": 0.0})
    assert check.verdict is Verdict.PASS and verdict is Verdict.PASS
    assert check.value == 0.0


def test_above_max_rate_with_enough_samples_fails():
    check, verdict = _outliers({"predictions": 5000.0, "outliers": 500.0})
    assert check.verdict is Verdict.FAIL and verdict is Verdict.FAIL
    assert check.value == pytest.approx(0.1)


def test_above_max_rate_with_too_few_samples_is_insufficient_data():
    check, _ = _outliers({"predictions": 100.0, "outliers": 50.0})
    assert check.verdict is Verdict.INSUFFICIENT_DATA


def test_a_failed_counters_query_is_an_error():
    failures = {WindowPart(Side.CURRENT, Kind.COUNTERS): "Unreachable: connection refused"}
    evaluation = judge(_spec(), Observations(TrackWindow(), failures=failures), NOW).evaluation
    assert evaluation.results[0].verdict is Verdict.ERROR


class _Counters:
    """A provider answering the one counters query with the given quantities' series."""

    def __init__(self, quantities: dict[str, float]):
        self.quantities = quantities

    def query(self, promql: str, at: datetime | None = None) -> InstantVector:
        assert QUANTITY_LABEL in promql
        labels = [{QUANTITY_LABEL: name} for name in self.quantities]
        return InstantVector(labels, np.asarray(list(self.quantities.values()), dtype=float))


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ({"predictions": 5000.0}, Verdict.INSUFFICIENT_DATA),  # no outlier series: served without a profile
        ({"predictions": 5000.0, "outliers": 0.0}, Verdict.PASS),  # the series is there and did not increase
        ({"predictions": 5000.0, "outliers": 400.0}, Verdict.FAIL),
    ],
)
def test_collected_counters_keep_a_missing_series_apart_from_zero(series, expected):
    report = evaluate(_spec(), Target("m"), _Counters(series), NOW).report
    (check,) = [r for r in report.evaluation.results if r.check == "outliers/rate"]
    assert check.verdict is expected
