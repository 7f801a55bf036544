"""The agreement check: the share of rows on which a shadow and the stable's model (scored side by
side in the shadow's pods) chose the same class, failed only when surely below spec.agreement.minRate;
missing pairs are InsufficientData, never a pass; the policy is refused on any track but shadow."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from modelwarden.analysis.bounds import budgeted_checks
from modelwarden.analysis.judge import Kind, Observations, Side, TrackWindow, WindowPart, judge
from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.prometheus.collect import Target, evaluate, plan_queries
from modelwarden.prometheus.provider import InstantVector
from tests.validation import validate_custom_resource

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _spec(min_rate: float = 0.9, min_samples: int = 500, **extra) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "track": "shadow", "agreement": {"minRate": min_rate},
                                           "minSamples": min_samples, **extra})


def _check(pairs, spec: DriftPolicySpec | None = None, failures=None):
    observations = Observations(TrackWindow(paired=pairs), failures=failures or {})
    evaluation = judge(spec or _spec(), observations, NOW).evaluation
    (check,) = [r for r in evaluation.results if r.check == "agreement/rate"]
    return check


def test_agreement_well_above_the_minimum_passes():
    check = _check({("0", "0"): 600.0, ("1", "1"): 380.0, ("1", "0"): 20.0})
    assert check.verdict is Verdict.PASS and check.value == pytest.approx(0.98) and check.samples == 1000
    assert check.upper_bound > 0.98 > check.lower_bound


def test_agreement_surely_below_the_minimum_fails_and_names_the_commonest_disagreement():
    check = _check({("0", "0"): 400.0, ("1", "1"): 300.0, ("0", "1"): 250.0, ("1", "0"): 50.0})
    assert check.verdict is Verdict.FAIL and check.value == pytest.approx(0.7)
    assert check.upper_bound < 0.9
    assert "'0' where stable said '1' (250 rows)" in check.message


def test_agreement_below_the_minimum_but_not_surely_passes():
    check = _check({("0", "0"): 530.0, ("0", "1"): 70.0}, _spec(min_rate=0.9, min_samples=100))  # 0.883 from 600 rows
    assert check.value < 0.9 and check.verdict is Verdict.PASS and "not surely" in check.message


def test_too_few_paired_rows_is_insufficient_data_whatever_the_rate():
    check = _check({("0", "1"): 400.0})
    assert check.verdict is Verdict.INSUFFICIENT_DATA and check.samples == 400


@pytest.mark.parametrize("pairs", [None, {}])
def test_no_paired_series_is_insufficient_data_not_a_pass(pairs):
    check = _check(pairs)
    assert check.verdict is Verdict.INSUFFICIENT_DATA and "pairWithStable" in check.message


def test_a_failed_paired_query_is_an_error():
    check = _check(None, failures={WindowPart(Side.CURRENT, Kind.PAIRED): "Unreachable: connection refused"})
    assert check.verdict is Verdict.ERROR and "connection refused" in check.message


def test_the_check_spends_a_share_of_the_error_budget():
    outliers_only = DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "track": "shadow", "outliers": {"maxRate": 0.1}})
    assert budgeted_checks(outliers_only) == 1 and budgeted_checks(_spec(outliers={"maxRate": 0.1})) == 2


def test_agreement_is_only_for_the_shadow_track_in_the_operator_and_at_admission():
    with pytest.raises(ValueError, match="spec.agreement applies to the shadow track"):
        DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "agreement": {"minRate": 0.9}})
    policy = {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": "p", "namespace": "ml"},
              "spec": {"targetRef": {"name": "m"}, "track": "canary", "agreement": {"minRate": 0.9}}}
    errors = validate_custom_resource(policy)
    assert any("spec.agreement" in e and "shadow track" in e for e in errors), errors
    policy["spec"]["track"] = "shadow"
    assert validate_custom_resource(policy) == []
    policy["spec"]["agreement"]["minRate"] = 0
    assert any("minRate" in e for e in validate_custom_resource(policy))


class _Paired:
    """A provider answering the paired query with (predicted, paired_predicted) series, and the counters with nothing."""

    def __init__(self, pairs: dict[tuple[str, str], float]):
        self.pairs, self.asked = pairs, []

    def query(self, promql: str, at: datetime | None = None) -> InstantVector:
        self.asked.append(promql)
        if "modelwarden_paired_predictions_total" not in promql:
            return InstantVector([], np.empty(0))
        labels = [{"predicted": p, "paired_predicted": q} for p, q in self.pairs]
        return InstantVector(labels, np.asarray(list(self.pairs.values()), dtype=float))


def test_the_query_groups_the_shadows_paired_rows_by_both_classes_and_the_collected_pairs_are_judged():
    spec = _spec()
    target = Target("m", versions={"shadow": "2", "stable": "1"})
    (promql,) = [q for q in plan_queries(spec, target).values() if "paired" in q]
    assert "sum by (predicted, paired_predicted)" in promql and 'track="shadow"' in promql and 'version="2"' in promql
    assert 'paired_version="1"' in promql  # pairs with the stable serving now, not an earlier one's
    provider = _Paired({("a", "a"): 100.0, ("b", "b"): 100.0, ("a", "b"): 800.0})
    report = evaluate(spec, target, provider, NOW).report
    (check,) = [r for r in report.evaluation.results if r.check == "agreement/rate"]
    assert check.verdict is Verdict.FAIL and check.value == pytest.approx(0.2)


def _rollouts(agreement: float, runs: int, seed: int, minutes: int = 120, rows_per_minute: int = 400):
    """Shadow rollouts judged each minute over an overlapping 30-minute window at the budget's level
    for each look (planning.budget, as the operator spends it): the minute of the first Fail, or None."""
    from modelwarden.api.driftpolicy import DriftPolicyStatus
    from modelwarden.planning.budget import evaluation_level

    spec = _spec(min_rate=0.98, min_samples=1000, window="30m")
    rng = np.random.default_rng(seed)
    first_fails = []
    for _ in range(runs):
        agreed = rng.binomial(rows_per_minute, agreement, size=minutes)
        first = None
        for minute in range(minutes):
            window = slice(max(0, minute - 29), minute + 1)
            same, rows = float(agreed[window].sum()), float(rows_per_minute * (window.stop - window.start))
            level = evaluation_level(spec, DriftPolicyStatus(evaluated_version="2", looks=minute), "2")
            pairs = {("0", "0"): same, ("1", "0"): rows - same}
            check = [r for r in judge(spec, Observations(TrackWindow(paired=pairs)), NOW, level).evaluation.results
                     if r.check == "agreement/rate"][0]
            if check.verdict is Verdict.FAIL:
                first = minute
                break
        first_fails.append(first)
    return first_fails


def test_a_shadow_agreeing_exactly_at_the_minimum_fails_at_most_alpha_of_its_rollouts_over_overlapping_windows():
    """The worst case the check must pass (true agreement = minRate), looked at every minute for two
    hours over overlapping windows: any Fail in a rollout counts (stricter than a breach)."""
    fails = _rollouts(agreement=0.98, runs=200, seed=71)
    # alpha 1 % per rollout: 2 expected at most; Binomial(200, 1 %) reaches 6 with probability 1.7 %.
    assert sum(f is not None for f in fails) <= 5


def test_a_shadow_that_disagrees_more_is_failed_within_ten_minutes():
    fails = _rollouts(agreement=0.95, runs=40, seed=73, minutes=10)
    assert all(f is not None for f in fails), fails


def test_a_nan_or_negative_pair_count_from_prometheus_is_an_error_never_a_fail():
    for bad in (float("nan"), -3.0):
        provider = _Paired({("a", "a"): 10.0, ("a", "b"): bad})
        report = evaluate(_spec(), Target("m", versions={"shadow": "2", "stable": "1"}), provider, NOW).report
        (check,) = [r for r in report.evaluation.results if r.check == "agreement/rate"]
        assert check.verdict is Verdict.ERROR and "invalid data from Prometheus" in check.message
