"""planning.backtest: the operator's decisions replayed over evaluations, false alarms and threshold suggestions."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from modelwarden.api.driftpolicy import Verdict
from modelwarden.planning import backtest
from modelwarden.planning.backtest import Critical
from tests.unit.test_policy_decisions import T0, ctx, evaluation

P, F, I, E = Verdict.PASS, Verdict.FAIL, Verdict.INSUFFICIENT_DATA, Verdict.ERROR
MINUTE = datetime.timedelta(minutes=1)


def replay(verdicts, **spec):
    replayed = backtest.Replay(ctx(**spec))
    for i, verdict in enumerate(verdicts):
        replayed.observe(evaluation(verdict, T0 + i * MINUTE))
    return replayed


def test_a_breach_acts_once_with_alert_rollback_and_retrain_and_rearms_after_a_pass():
    replayed = replay([F, F, F, F, P, F, F])  # failureThreshold 2, cooldown 1h
    by_time = [(int((a.time - T0) / MINUTE), a.action) for a in replayed.actions]
    # minute 4: the resolved notification is no action; minute 6's breach retrains no more (cooldown 1h)
    assert by_time == [(1, "alert"), (1, "rollback"), (1, "retrain"), (6, "alert"), (6, "rollback")]
    assert {a.detail for a in replayed.actions if a.action == "alert"} == {"Breach"}
    assert [int((t - T0) / MINUTE) for t in replayed.breaches] == [1, 6]
    assert replayed.actions[0].checks == ("drift/features",)


def test_insufficient_data_and_errors_neither_count_nor_reset_and_never_act():
    replayed = replay([F, I, E, I, F, P, I, I, E])
    assert [int((t - T0) / MINUTE) for t in replayed.breaches] == [4]
    assert [a.action for a in replayed.actions] == ["alert", "rollback", "retrain"]
    assert replay([I, E, I, E, P, I]).actions == []


def test_a_retrain_runs_until_the_next_evaluation_and_the_cooldown_counts_from_its_start():
    replayed = replay([F, F, P, F, F], actions={"retrain": {"jobTemplate": {"template": {"spec": {"containers": [
        {"name": "train", "image": "t"}]}}}, "cooldown": "2m"}})
    assert [(int((a.time - T0) / MINUTE), a.action) for a in replayed.actions if a.action == "retrain"] == [(1, "retrain"), (4, "retrain")]
    assert replayed.status.last_retrain.outcome == "Running"


def test_shares_and_false_alarms_over_the_healthy_period():
    replayed = replay([F, F, P, P, F, F, F, P])
    shares = {s.check: s for s in backtest.check_shares(replayed)}
    assert (shares["drift/features"].evaluations, shares["drift/features"].failed) == (8, 5)
    alarms = backtest.false_alarms(replayed, T0 + 3 * MINUTE, MINUTE)
    assert (alarms.evaluations, alarms.failing, alarms.breaches) == (4, 2, 1)
    assert alarms.days == pytest.approx(4 / 1440) and alarms.per_day == pytest.approx(360.0)
    assert alarms.per_evaluation == 0.5
    assert backtest.false_alarms(replayed, T0 - MINUTE, MINUTE).evaluations == 0


def test_breaches_of_follows_the_streak_rules():
    assert backtest.breaches_of([True, True, True, True], 2) == 1
    assert backtest.breaches_of([True, False, True, True, False, True, True], 2) == 2
    assert backtest.breaches_of([True, None, True], 2) == 1  # InsufficientData keeps the streak
    assert backtest.breaches_of([True, None, False, True], 2) == 0
    assert backtest.breaches_of([], 1) == 0


def test_a_maximum_is_suggested_at_the_most_sensitive_value_within_the_budget():
    values = [0.1, 0.5, 0.52, 0.2, 0.3, 0.31, 0.1]
    criticals = [Critical(v, True) for v in values]
    # max 0.25: 0.5, 0.52 fail (a breach at failureThreshold 2), 0.3, 0.31 fail (another)
    s = backtest.suggest("performance/error_rate", "spec.performance[0].max", 0.25, criticals, True, 2, 0)
    assert s.breaches_at_current == 2
    assert s.suggested == pytest.approx(0.5)  # at 0.5 only 0.52 fails: no streak of 2
    assert backtest.breaches_of([v > s.suggested for v in values], 2) == 0
    allowing_one = backtest.suggest("x", "f", 0.25, criticals, True, 2, 1)
    assert allowing_one.suggested == pytest.approx(0.3)  # 0.31 alone fails; 0.5, 0.52 still breach once


def test_a_minimum_and_a_significance_level_are_suggested_downwards():
    criticals = [Critical(v, True) for v in (0.9, 0.8, 0.79, 0.95, 0.85)]
    s = backtest.suggest("performance/accuracy", "spec.performance[0].min", 0.86, criticals, False, 2, 0)
    assert s.breaches_at_current == 1 and s.suggested == pytest.approx(0.8)  # at 0.8 only 0.79 fails: no streak
    assert backtest.breaches_of([s.suggested > c.value for c in criticals], 2) == 0


def test_suggestions_without_values_or_within_reach_say_why():
    none = backtest.suggest("custom/x", "spec.checks[0].max", 1.0, [Critical(None, False)] * 3, True, 1, 0)
    assert none.suggested is None and "no value" in none.note
    always = backtest.suggest("custom/x", "spec.checks[0].max", 1.0, [Critical(5.0, True)] * 3, True, 1, 0)
    assert always.suggested == pytest.approx(5.0)  # at 5.0 nothing fails
    # Undecided evaluations (InsufficientData) never fail whatever the threshold, and never reset a streak.
    mixed = [Critical(0.9, True), Critical(None, False), Critical(0.9, True)]
    assert backtest.suggest("c", "f", 0.5, mixed, True, 2, 0).breaches_at_current == 1


def test_allowed_breaches_and_lenient_rounding():
    assert backtest.allowed_breaches(9.5) == 0 and backtest.allowed_breaches(30) == 1 and backtest.allowed_breaches(65) == 2
    s = backtest.suggest("c", "f", None, [Critical(0.123456, True)], True, 1, 0)
    assert s.suggested == pytest.approx(0.124)  # rounded up: a maximum of 0.124 still passes 0.123456
    s = backtest.suggest("c", "f", None, [Critical(0.123456, True)], False, 1, 0)
    assert s.suggested == pytest.approx(0.123)


def test_threshold_fields_name_the_spec_field():
    fields = backtest.threshold_fields(ctx(performance=[{"metric": "accuracy", "min": 0.8}, {"metric": "latency_p99", "max": 0.2}],
                                           outliers={"maxRate": 0.05}).spec)
    assert {name: [(b.field, b.current, b.fails_above) for b in bounds] for name, bounds in fields.items()} == {
        "performance/accuracy": [("spec.performance[0].min", 0.8, False)],
        "performance/latency_p99": [("spec.performance[1].max", 0.2, True)],
        "outliers/rate": [("spec.outliers.maxRate", 0.05, True)]}
    both = backtest.threshold_fields(ctx(performance=[], checks=[{"name": "volume", "query": "sum(up)", "min": 10, "max": 500}]).spec)
    assert [(b.field, b.fails_above) for b in both["custom/volume"]] == [("spec.checks[0].min", False), ("spec.checks[0].max", True)]


def test_a_suggestion_the_spec_would_refuse_is_none_with_a_reason():
    zero_p = [Critical(0.0, True), Critical(0.0, True)]  # adjusted p-values of 0: only alpha 0 would pass them
    s = backtest.suggest("drift/features", "spec.drift.threshold", 0.01, zero_p, False, 1, 0, valid=(0.0, 0.99))
    assert s.suggested is None and "not one the spec accepts" in s.note


def test_breaches_scale_to_a_month_of_evaluations():
    rng = np.random.default_rng(3)
    criticals = [Critical(float(v), True) for v in rng.normal(size=43_200)]
    s = backtest.suggest("custom/x", "spec.checks[0].max", 1.0, criticals, True, 3, 1)
    values = np.array([c.value for c in criticals])
    assert backtest.breaches_of(list(values > s.suggested), 3) <= 1


def _drift(statistic, p_value=None, method="psi"):
    from modelwarden.analysis.drift import FeatureDrift
    from modelwarden.api.checks import DriftMethod

    n = len(statistic)
    return FeatureDrift(check="drift/features", method=DriftMethod(method), threshold=0.1, names=tuple(f"f{i}" for i in range(n)),
                        statistic=np.asarray(statistic, dtype=float), p_value=None if p_value is None else np.asarray(p_value),
                        adjusted_p_value=None if p_value is None else np.asarray(p_value, dtype=float),
                        reference_samples=np.full(n, 1e4), current_samples=np.full(n, 1e4), tested=np.ones(n, bool),
                        drifted=np.zeros(n, bool), mismatched=np.zeros(n, bool))


@pytest.mark.parametrize("share", [None, 0.3, 0.55, 1.0])
def test_a_drift_critical_value_is_where_the_drift_verdict_flips(share):
    """The critical value agrees with analysis.drift.verdict on either side of it, for distances and p-values."""
    from dataclasses import replace

    from modelwarden.analysis import drift as drift_analysis
    from modelwarden.api.checks import Correction
    from modelwarden.commands.backtest import _drift_critical

    rng = np.random.default_rng(7)
    for _ in range(20):
        statistic = rng.uniform(0, 0.5, size=20)
        report = _drift(statistic)
        c = _drift_critical(report, share, None).value
        for theta in (float(np.nextafter(c, 0.0)), c):  # fails iff θ < c (c is just above the k-th largest statistic)
            at = replace(report, threshold=theta, drifted=statistic >= theta)
            assert (drift_analysis.verdict(at, share, 100, Correction.NONE).verdict.value == "Fail") == (theta < c)
        p = rng.uniform(0, 0.2, size=20)
        report = _drift(statistic, p, "ks")
        c = _drift_critical(report, share, None).value
        for theta in (c, float(np.nextafter(c, 1.0))):  # fails iff θ > c
            at = replace(report, threshold=theta, drifted=p < theta)
            assert (drift_analysis.verdict(at, share, 100, Correction.NONE).verdict.value == "Fail") == (theta > c)
        # The look's level caps θ, and a feature below the effect floor never drifts.
        level = float(np.sort(p)[len(p) // 2])
        capped = _drift_critical(report, share, level).value
        assert capped == (c if c < level else None)
        effect = rng.uniform(0, 0.1, size=20)
        floored = replace(report, effect=effect, min_effect=0.05)
        f = _drift_critical(floored, share, None).value
        for theta in ((f, float(np.nextafter(f, 1.0))) if f is not None else (0.5,)):
            at = replace(floored, threshold=theta, drifted=(p < theta) & (effect >= 0.05))
            assert (drift_analysis.verdict(at, share, 100, Correction.NONE).verdict.value == "Fail") == (f is not None and theta > f)


def test_an_unset_cap_counts_breaches_as_no_cap_and_reports_no_current_value():
    criticals = [Critical(1e-6, True)] * 3  # every look's p-value below its level: fails under any cap above 1e-6
    s = backtest.suggest("drift/features", "spec.drift.threshold", None, criticals, False, 3, 0, valid=(0.0, 0.99), effective=0.99)
    assert (s.current, s.breaches_at_current) == (None, 1)
