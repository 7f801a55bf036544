"""The A/B winner of a DriftPolicy with a comparison (pure): which track is better, once.

Each look's comparison results carry the effect's two-sided interval at the look's level
(analysis.ab); the levels of a version's looks sum to at most spec.alpha (planning.budget). The
first look whose intervals exclude no difference decides, and the decision stands for that split
of that version: repeating the test until it says what one hopes is exactly what the budget pays for, so
no later look may overturn it (the gate's own one-sided test still rolls a worse track back).
A metric that shows the baseline better outweighs one that shows the track better, and a look on
which any comparison fails the gate never names the policy's own track. Only evidence gathered
after the current split began decides (a canary retried after an abort starts a new question).
"""

from __future__ import annotations

import datetime

from modelwarden.analysis.ab import Difference, Side
from modelwarden.api.common import set_condition
from modelwarden.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus, Evaluation
from modelwarden.api.policystatus import PASSING, MetricWinner, Verdict, Winner
from modelwarden.planning.types import Event

CONDITION = "Winner"
INCONCLUSIVE = Side.INCONCLUSIVE.value
PREFIX = "comparison/"


def _metric_winner(metric: str, difference: Difference, track: str, baseline: str) -> MetricWinner:
    side = difference.better(higher_is_better=metric != "error_rate")
    name = {Side.CANDIDATE: track, Side.BASELINE: baseline, Side.INCONCLUSIVE: INCONCLUSIVE}[side]
    return MetricWinner(metric=metric, winner=name, effect=difference.effect, lower=difference.lower, upper=difference.upper)


def _judged(evaluation: Evaluation, track: str, baseline: str) -> list[MetricWinner]:
    """The comparison metrics this look judged (InsufficientData and Error say nothing)."""
    judged = []
    for result in evaluation.results:
        if not result.check.startswith(PREFIX) or not (result.verdict in PASSING or result.verdict == Verdict.FAIL):
            continue
        if result.effect is None or result.lower_bound is None or result.upper_bound is None or result.threshold is None:
            continue
        difference = Difference(result.effect, result.lower_bound, result.upper_bound, result.threshold)
        judged.append(_metric_winner(result.check.removeprefix(PREFIX), difference, track, baseline))
    return judged


def describe(winner: Winner) -> str:
    metrics = "; ".join(f"{m.summary()} ({m.winner})" for m in winner.metrics)
    level = f" at level {winner.level:.2g}" if winner.level is not None else ""
    return f"{winner.winner}{level}: {metrics}" if metrics else winner.winner


def evidence_span(spec: DriftPolicySpec) -> datetime.timedelta:
    """How far back a look's comparison reaches: accuracy reads the feedback window."""
    assert spec.comparison is not None
    if "accuracy" in spec.comparison.metrics and spec.feedback_window is not None:
        return max(spec.window, spec.feedback_window)
    return spec.window


def next_winner(spec: DriftPolicySpec, status: DriftPolicyStatus, evaluation: Evaluation, version: str | None,
                rollout_started: datetime.datetime | None, now: datetime.datetime, generation: int | None) -> list[Event]:
    """Update status.winner and the Winner condition from this look; the Events of a decision."""
    if spec.comparison is None:
        return []
    track, baseline = spec.track.value, spec.comparison.track.value
    previous = status.winner if status.winner is not None and status.winner.version == version else None
    if previous is not None and rollout_started is not None and previous.decided_at is not None and previous.decided_at < rollout_started:
        previous = None  # decided about an earlier split of this version (aborted, then retried): ask again
    if previous is not None and previous.winner != INCONCLUSIVE:
        return []  # decided for this split: it stands
    judged = _judged(evaluation, track, baseline)
    window_start = evaluation.time - evidence_span(spec)
    if not judged:
        status.winner = previous or Winner(version=version)
        _condition(status, now, generation)
        return []
    sides = {m.winner for m in judged}
    gate_failed = any(r.check.startswith(PREFIX) and r.verdict == Verdict.FAIL for r in evaluation.results)
    decided = baseline if baseline in sides else track if track in sides and not gate_failed else INCONCLUSIVE
    if rollout_started is not None and window_start < rollout_started:
        decided = INCONCLUSIVE  # the window reaches back before this split: not evidence about it
    level = next(r.threshold for r in evaluation.results if r.check.startswith(PREFIX) and r.threshold is not None)
    status.winner = Winner(version=version, winner=decided, level=level, metrics=judged,
                           decided_at=evaluation.time if decided != INCONCLUSIVE else None,
                           window_start=window_start if decided != INCONCLUSIVE else None)
    _condition(status, now, generation)
    if decided == INCONCLUSIVE:
        return []
    return [Event("Normal", "WinnerDecided", f"{track} {version} vs {baseline}: {describe(status.winner)}")]


def _condition(status: DriftPolicyStatus, now: datetime.datetime, generation: int | None) -> None:
    winner = status.winner
    assert winner is not None
    decided = winner.winner != INCONCLUSIVE
    reason = winner.winner.title() if decided else INCONCLUSIVE
    message = describe(winner) if winner.metrics else "no comparison judged yet"
    status.conditions = set_condition(status.conditions, CONDITION, decided, reason, message, now, generation)
