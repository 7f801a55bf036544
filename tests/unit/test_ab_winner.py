"""The A/B winner: Newcombe's interval, the Winner condition decided once per version, and
autoPromoteWinner promoting a fixed split's canary only on fresh evidence with every gate passing."""

from __future__ import annotations

import datetime

import pytest

from modelwarden.analysis.ab import Side, difference
from modelwarden.analysis.judge import Observations, TrackWindow, judge
from modelwarden.api.common import find_condition
from modelwarden.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus, Verdict
from modelwarden.planning import policy as decide
from modelwarden.planning.notification import AlertContext
from modelwarden.planning.types import PolicyVerdict
from tests.unit.test_plan import ALL_READY, T0, md, reasons, step

MIN = datetime.timedelta(minutes=1)


def test_newcombe_interval_matches_the_published_example():
    """Newcombe (1998), Statistics in Medicine 17:873, table II, example (a): 56/70 vs 48/80."""
    interval = difference(56, 70, 48, 80, 0.05)
    assert interval.effect == pytest.approx(0.2)
    assert (round(interval.lower, 4), round(interval.upper, 4)) == (0.0524, 0.3339)
    assert interval.better(higher_is_better=True) is Side.CANDIDATE
    assert interval.better(higher_is_better=False) is Side.BASELINE


def test_an_error_rate_of_zero_still_gets_an_interval_that_holds_no_difference_when_too_early():
    assert difference(0, 5000, 5, 5000, 0.01).better(higher_is_better=False) is Side.INCONCLUSIVE
    assert difference(0, 5000, 60, 5000, 0.01).better(higher_is_better=False) is Side.CANDIDATE


def spec(**overrides) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({
        "targetRef": {"name": "fraud"}, "track": "canary", "interval": "1m", "window": "15m", "failureThreshold": 3,
        "minSamples": 500, "drift": None, "comparison": {"track": "stable", "metrics": ["accuracy"]}, **overrides})


def context(version: str = "8", rollout_started=None, **overrides) -> decide.PolicyContext:
    return decide.PolicyContext(name="ab", namespace="ml", uid="uid", spec=spec(**overrides), generation=1, created=T0,
                                alert=AlertContext(policy="ab", namespace="ml", modeldeployment="fraud", model="fraud",
                                                   track="canary", version=version), rollout_started=rollout_started)


def look(candidate_correct: int, baseline_correct: int, labels: int = 2000):
    current = TrackWindow(confusion={("1", "1"): float(candidate_correct), ("0", "1"): float(labels - candidate_correct)})
    baseline = TrackWindow(confusion={("1", "1"): float(baseline_correct), ("0", "1"): float(labels - baseline_correct)})
    return Observations(current=current, baseline=baseline)


def observe(status, observations, at, version="8", rollout_started=None, **overrides):
    ctx = context(version, rollout_started, **overrides)
    evaluation = judge(ctx.spec, observations, at, 0.001).evaluation
    return decide.observe(ctx, status, evaluation, at)


def test_the_comparison_result_carries_the_effect_and_its_two_sided_interval():
    evaluation = judge(spec(), look(1900, 1700), T0, 0.001).evaluation
    result = next(r for r in evaluation.results if r.check == "comparison/accuracy")
    assert result.effect == pytest.approx(0.1) and result.lower_bound < 0.1 < result.upper_bound
    assert result.lower_bound > 0 and "difference +0.1 in [" in result.message


def test_winner_is_inconclusive_until_an_interval_excludes_no_difference_then_stands_for_the_version():
    first = observe(DriftPolicyStatus(), look(1745, 1740), T0)
    winner = first.status.winner
    assert winner.winner == "Inconclusive" and winner.decided_at is None and winner.version == "8"
    condition = find_condition(first.status.conditions, "Winner")
    assert condition.status == "False" and condition.reason == "Inconclusive" and "accuracy +0.0025" in condition.message
    assert "WinnerDecided" not in [e.reason for e in first.events]

    second = observe(first.status, look(1900, 1700), T0 + MIN)
    winner = second.status.winner
    assert winner.winner == "canary" and winner.decided_at == T0 + MIN and winner.window_start == T0 + MIN - spec().window
    assert find_condition(second.status.conditions, "Winner").reason == "Canary"
    assert [e.reason for e in second.events if e.reason == "WinnerDecided"] == ["WinnerDecided"]

    # A later look that shows no difference (or even the other way) does not overturn it: the budget paid for one answer.
    third = observe(second.status, look(1700, 1720), T0 + 2 * MIN)
    assert third.status.winner == winner and "WinnerDecided" not in [e.reason for e in third.events]

    # A new canary version starts with no winner.
    fourth = observe(third.status, look(1745, 1740), T0 + 3 * MIN, version="9")
    assert fourth.status.winner.version == "9" and fourth.status.winner.winner == "Inconclusive"


def test_a_worse_canary_makes_the_baseline_the_winner_and_insufficient_data_decides_nothing():
    worse = observe(DriftPolicyStatus(), look(1600, 1800), T0)
    assert worse.status.winner.winner == "stable" and find_condition(worse.status.conditions, "Winner").reason == "Stable"
    thin = observe(DriftPolicyStatus(), look(100, 90, labels=120), T0)
    assert thin.status.winner.winner == "Inconclusive" and thin.status.winner.metrics == []
    assert find_condition(thin.status.conditions, "Winner").message == "no comparison judged yet"


def ab_md(auto: bool = True):
    return md(canary={"version": "8", "modelUri": "s3://models/8", "replicas": 1, "weight": 50, "autoPromoteWinner": auto})


def gate(winner: str | None, evidence_from, result: str = "Pass", name: str = "ab", version: str = "8",
         baseline: str = "stable") -> PolicyVerdict:
    return PolicyVerdict(name=name, track="canary", verdict=Verdict(result), evaluated_at=T0 + 30 * MIN, consecutive_failures=0,
                         failure_threshold=3, rollback=True, version=version, window=datetime.timedelta(minutes=15),
                         winner=winner, winner_baseline=baseline if winner else None, winner_evidence_from=evidence_from,
                         winner_summary="accuracy +0.1 in [+0.07, +0.13]")


def started():
    _, current = step(ab_md(), ALL_READY, now=T0)
    assert current.status.canary_started_at == T0
    return current


def test_auto_promote_winner_promotes_the_canary_that_won_on_fresh_evidence():
    result, promoted = step(started(), ALL_READY, [gate("canary", T0 + 5 * MIN)], now=T0 + 31 * MIN)
    assert "CanaryPromoted" in reasons(result)
    message = next(e.message for e in result.events if e.reason == "CanaryPromoted")
    assert "won the A/B comparison (DriftPolicy ab: accuracy +0.1" in message
    assert promoted.status.stable.version == "8" and promoted.status.canary is None


@pytest.mark.parametrize("why, verdicts", [
    ("the winner is the stable track", [gate("stable", T0 + 5 * MIN)]),
    ("no winner yet", [gate(None, None)]),
    ("the deciding window began before the split", [gate("canary", T0 - 5 * MIN)]),
    ("the winner is about another version", [gate("canary", T0 + 5 * MIN, version="7")]),
    ("another gating policy has no data", [gate("canary", T0 + 5 * MIN), gate(None, None, result="InsufficientData", name="drift")]),
    ("another gating policy named stable the winner", [gate("canary", T0 + 5 * MIN), gate("stable", T0 + 5 * MIN, name="errors")]),
    ("it beat only the shadow", [gate("canary", T0 + 5 * MIN, baseline="shadow")]),
])
def test_no_promotion_without_a_fresh_canary_win_and_every_gate_passing(why, verdicts):
    result, held = step(started(), ALL_READY, verdicts, now=T0 + 31 * MIN)
    assert "CanaryPromoted" not in reasons(result), why
    assert held.status.stable.version == "7" and held.status.canary.version == "8"


def test_without_auto_promote_winner_a_won_split_holds():
    _, current = step(ab_md(auto=False), ALL_READY, now=T0)
    result, held = step(current, ALL_READY, [gate("canary", T0 + 5 * MIN)], now=T0 + 31 * MIN)
    assert "CanaryPromoted" not in reasons(result) and held.status.canary.version == "8"


def test_policy_verdict_reads_the_winner_of_its_evaluated_version_only():
    status = observe(DriftPolicyStatus(), look(1900, 1700), T0).status
    verdict = PolicyVerdict.from_policy("ab", spec(), status)
    assert verdict.winner == "canary" and verdict.winner_evidence_from == T0 - spec().window
    assert verdict.won_since("8", T0 - spec().window) and not verdict.won_since("8", T0) and not verdict.won_since("9", None)


def test_only_evidence_from_after_the_split_began_decides_and_a_retried_split_is_asked_again():
    started = T0 - 10 * MIN  # the 15-minute window of a look at T0 reaches back before it
    early = observe(DriftPolicyStatus(), look(1900, 1700), T0, rollout_started=started)
    assert early.status.winner.winner == "Inconclusive" and early.status.winner.metrics[0].winner == "canary"
    later = observe(early.status, look(1900, 1700), T0 + 5 * MIN, rollout_started=started)
    assert later.status.winner.winner == "canary" and later.status.winner.window_start == started
    # Aborted and retried under the same version: the old answer is about another split.
    retried = observe(later.status, look(1745, 1740), T0 + 30 * MIN, rollout_started=T0 + 20 * MIN)
    assert retried.status.winner.winner == "Inconclusive"
    again = observe(retried.status, look(1900, 1700), T0 + 36 * MIN, rollout_started=T0 + 20 * MIN)
    assert again.status.winner.winner == "canary" and again.status.winner.decided_at == T0 + 36 * MIN


def test_a_look_whose_gate_fails_never_names_the_policys_own_track():
    both = spec(comparison={"track": "stable", "metrics": ["accuracy", "error_rate"]})
    current = TrackWindow(confusion={("1", "1"): 1900.0, ("0", "1"): 100.0}, counters={"requests": 5000.0, "errors": 42.0})
    baseline = TrackWindow(confusion={("1", "1"): 1700.0, ("0", "1"): 300.0}, counters={"requests": 5000.0, "errors": 25.0})
    evaluation = judge(both, Observations(current=current, baseline=baseline), T0, 0.05).evaluation
    verdicts = {r.check: r.verdict for r in evaluation.results}
    assert verdicts["comparison/error_rate"] == Verdict.FAIL  # one-sided: significantly worse ...
    interval = next(r for r in evaluation.results if r.check == "comparison/error_rate")
    assert interval.lower_bound < 0 < interval.upper_bound  # ... while its two-sided interval is inconclusive
    ctx = decide.PolicyContext(**{**context().__dict__, "spec": both})
    winner = decide.observe(ctx, DriftPolicyStatus(), evaluation, T0).status.winner
    accuracy = next(m for m in winner.metrics if m.metric == "accuracy")
    assert accuracy.winner == "canary" and winner.winner == "Inconclusive"


def test_the_evidence_of_an_accuracy_comparison_reaches_back_its_feedback_window():
    status = observe(DriftPolicyStatus(), look(1900, 1700), T0, feedbackWindow="2h").status
    assert status.winner.winner == "canary" and status.winner.window_start == T0 - datetime.timedelta(hours=2)


def test_a_policy_whose_comparison_was_removed_names_no_winner_to_the_modeldeployment():
    status = observe(DriftPolicyStatus(), look(1900, 1700), T0).status
    assert PolicyVerdict.from_policy("ab", spec(), status).winner == "canary"
    assert PolicyVerdict.from_policy("ab", spec(comparison=None), status).winner is None
