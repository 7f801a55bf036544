"""A DriftPolicy replayed over past evaluations: the operator's own decisions, then what they add up to.

``Replay`` feeds each evaluation to the same pure decision the operator runs every tick
(``tick.decide_tick``: the streak, failureThreshold, Breached, alert repeats, rollback and the
retraining rules with their cooldown), so a backtest says what the operator *would* have done.
Two things cannot be replayed and are assumed: a rollback does not change the recorded traffic
(the data after it is what was served then), and a retraining Job succeeds at the next
evaluation (it frees the one-Job-at-a-time rule; the cooldown still counts from its start).

``summarize`` turns the replay into the report: the actions, each check's failing share, false
alarms over a period the user declares healthy, and per tunable threshold the most sensitive value
that would have raised at most one false alarm per 30 days in that period.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from modelwarden.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus, Evaluation, Verdict
from modelwarden.planning import tick
from modelwarden.planning.policy import PolicyContext
from modelwarden.planning.retraining import JobOutcome, JobState

FALSE_ALARM_BUDGET_DAYS = 30  # the suggested thresholds allow at most one false alarm per this many days
_BELOW_ONE = math.nextafter(1.0, 0.0)  # the largest value of a bound that must stay below 1


@dataclass(frozen=True)
class Action:
    """Something the operator would have done at ``time``."""

    time: datetime.datetime
    action: str  # alert, rollback or retrain
    checks: tuple[str, ...]  # the failing checks behind it
    detail: str = ""  # the alert's kind (Breach, EvaluationError, …), the Job's name

    def to_wire(self) -> dict[str, object]:
        wire: dict[str, object] = {"time": _rfc3339(self.time), "action": self.action, "checks": list(self.checks)}
        if self.detail:
            wire["detail"] = self.detail
        return wire


@dataclass
class Replay:
    """The operator's decisions over a sequence of evaluations of one policy."""

    ctx: PolicyContext
    status: DriftPolicyStatus = field(default_factory=DriftPolicyStatus)
    timeline: list[tuple[datetime.datetime, Verdict]] = field(default_factory=list)  # every evaluation, compactly
    shares: dict[str, list[int]] = field(default_factory=dict)  # check -> [evaluations, failed]
    actions: list[Action] = field(default_factory=list)
    breaches: list[datetime.datetime] = field(default_factory=list)  # when a breach began (the Breached transition)

    def observe(self, evaluation: Evaluation) -> list[Action]:
        """Decide on one evaluation exactly as the operator's tick would; returns the new actions."""
        now = evaluation.time
        running = self._running_job()
        seen = tick.Observations(
            target_found=True,
            jobs=(running,) if running else (),
            job=JobState(running.name, JobOutcome.SUCCEEDED, now, started_at=running.started_at, trigger=running.trigger)
            if running else None,
            evaluation=evaluation,
        )
        decided = tick.decide_tick(self.ctx, self.status, seen, now)
        failing = tuple(r.check for r in evaluation.results if r.verdict == Verdict.FAIL)
        new: list[Action] = []
        if decided.notification is not None and not decided.notification.resolved:
            new.append(Action(now, "alert", failing, decided.notification.kind))
        if decided.rollback_requested:
            new.append(Action(now, "rollback", failing))
        if decided.retrain is not None:
            new.append(Action(now, "retrain", failing, decided.retrain.job_name))
        if _breached(decided.status) and not _breached(self.status):
            self.breaches.append(now)
        # The status's ring buffer of past evaluations is for people and the ModelDeployment's gates;
        # no DriftPolicy decision reads it, and copying 50 entries at every step of a month is most
        # of a replay's decision time, so the replay keeps it empty.
        decided.status.evaluations = []
        self.status = decided.status
        self.timeline.append((now, evaluation.verdict))
        for result in evaluation.results:
            counted = self.shares.setdefault(result.check, [0, 0])
            counted[0] += 1
            counted[1] += result.verdict == Verdict.FAIL
        self.actions += new
        return new

    def _running_job(self) -> JobState | None:
        retrain = self.status.last_retrain
        if retrain is None or retrain.outcome != JobOutcome.RUNNING:
            return None
        return JobState(retrain.job_name, JobOutcome.RUNNING, started_at=retrain.started_at,
                        trigger=(retrain.trigger or "").lower())


def _breached(status: DriftPolicyStatus) -> bool:
    return any(c.type == "Breached" and c.status == "True" for c in status.conditions)


@dataclass(frozen=True)
class CheckShare:
    check: str
    evaluations: int  # evaluations with this check
    failed: int

    @property
    def share(self) -> float:
        return self.failed / self.evaluations if self.evaluations else 0.0

    def to_wire(self) -> dict[str, object]:
        return {"check": self.check, "evaluations": self.evaluations, "failed": self.failed, "share": round(self.share, 6)}


@dataclass(frozen=True)
class FalseAlarms:
    """Over the healthy period: failing evaluations per evaluation, breaches per day."""

    evaluations: int
    failing: int
    breaches: int
    days: float

    @property
    def per_evaluation(self) -> float:
        return self.failing / self.evaluations if self.evaluations else 0.0

    @property
    def per_day(self) -> float:
        return self.breaches / self.days if self.days > 0 else 0.0

    def to_wire(self) -> dict[str, object]:
        return {"perEvaluation": round(self.per_evaluation, 6), "perDay": round(self.per_day, 6),
                "evaluations": self.evaluations, "failingEvaluations": self.failing, "breaches": self.breaches,
                "days": round(self.days, 6)}


@dataclass(frozen=True)
class Suggestion:
    """The most sensitive value of one threshold that would have breached at most ``allowed``
    times in the healthy period (``None``: no value would have, or the check never had a value)."""

    check: str
    field: str  # where it is set in the spec, e.g. spec.performance[0].min
    current: float | None
    suggested: float | None
    breaches_at_current: int
    allowed: int
    note: str = ""

    def to_wire(self) -> dict[str, object]:
        wire: dict[str, object] = {"check": self.check, "field": self.field, "current": self.current,
                                   "suggested": self.suggested, "breachesAtCurrent": self.breaches_at_current,
                                   "allowedBreaches": self.allowed}
        if self.note:
            wire["note"] = self.note
        return wire


@dataclass(frozen=True)
class Critical:
    """One evaluation of one check, as a function of its threshold θ: it fails iff θ is on the
    failing side of ``value`` (``fails_above``: fails iff θ < value, i.e. a maximum; otherwise
    fails iff θ > value: a minimum or a significance level). ``value`` None: it cannot fail (no
    value, or InsufficientData/Error for reasons a threshold does not change)."""

    value: float | None
    passes_otherwise: bool  # a non-failing outcome would be a Pass (resets the streak), not InsufficientData/Error


def check_shares(replay: Replay) -> list[CheckShare]:
    return [CheckShare(check, n, failed) for check, (n, failed) in replay.shares.items()]


def false_alarms(replay: Replay, until: datetime.datetime, step: datetime.timedelta) -> FalseAlarms:
    """Over the evaluations up to ``until``; a day is evaluations x ``step`` (the time they cover)."""
    healthy = [(t, verdict) for t, verdict in replay.timeline if t <= until]
    if not healthy:
        return FalseAlarms(0, 0, 0, 0.0)
    days = (healthy[-1][0] - healthy[0][0] + step).total_seconds() / 86400
    return FalseAlarms(len(healthy), sum(verdict == Verdict.FAIL for _, verdict in healthy),
                       sum(1 for t in replay.breaches if t <= until), days)


def breaches_of(failing: Sequence[bool | None], failure_threshold: int) -> int:
    """Breaches of a verdict sequence under the operator's rules: a Fail counts, a Pass (False)
    resets the streak and re-arms, anything else (None: InsufficientData, Error) does neither —
    so a breach is a run of at least failure_threshold Fails between Passes, undecided ones left out."""
    decided = np.array([f for f in failing if f is not None], dtype=bool)
    return _breaches(decided, failure_threshold)


def _breaches(decided: np.ndarray, failure_threshold: int) -> int:
    if not decided.any():
        return 0
    edges = np.diff(np.concatenate(([0], decided.astype(np.int8), [0])))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int((runs >= failure_threshold).sum())


def suggest(check: str, field_path: str, current: float | None, criticals: Sequence[Critical], fails_above: bool,
            failure_threshold: int, allowed: int, note: str = "",
            valid: tuple[float, float] = (-math.inf, math.inf), effective: float | None = None) -> Suggestion:
    """Scan the candidate thresholds from the most lenient to the most sensitive and stop before
    the first at which the healthy period would have breached more than ``allowed`` times.

    Candidates are the values seen, rounded towards leniency to three significant digits (the
    suggestion is printed so); ``valid`` is the open-closed range the spec accepts; ``effective``
    is the value the current spec acts as when that is not ``current`` (an unset cap: no cap)."""
    known = np.array([c.value is not None for c in criticals], dtype=bool)
    values = np.array([c.value if c.value is not None else np.nan for c in criticals], dtype=float)
    resets = np.array([c.passes_otherwise for c in criticals], dtype=bool)

    def breaches_at(theta: float) -> int:
        fails = known & ((theta < values) if fails_above else (theta > values))
        decided = fails | (known & resets)  # a Fail, or a Pass that resets; the rest neither
        return _breaches(fails[decided], failure_threshold)

    finite = values[known & np.isfinite(values)]
    acting = effective if effective is not None else current
    at_current = breaches_at(acting) if acting is not None else 0
    if not finite.size:
        return Suggestion(check, field_path, current, None, at_current, allowed, note or "the check had no value in the period")
    # At θ = a value's own (lenient-rounded) figure that evaluation passes, so each is a candidate.
    rounded = np.unique([_round_lenient(float(v), fails_above) for v in np.unique(finite)])
    candidates = rounded[::-1] if fails_above else rounded  # the most lenient first
    best: float | None = None
    for theta in candidates:
        if breaches_at(float(theta)) > allowed:
            break
        best = float(theta)
    if best is None:
        return Suggestion(check, field_path, current, None, at_current, allowed,
                          note or "even the most lenient value seen would have breached too often")
    if not valid[0] < best <= valid[1]:
        return Suggestion(check, field_path, current, None, at_current, allowed,
                          f"{note + '; ' if note else ''}the value it would take ({best:g}) is not one the spec accepts")
    return Suggestion(check, field_path, current, best, at_current, allowed, note)


def _round_lenient(value: float, fails_above: bool) -> float:
    """Three significant digits, rounded towards leniency (up for a maximum, down otherwise) so the
    evaluation the value came from still passes."""
    if value == 0 or not math.isfinite(value):
        return value
    rounded = float(f"{value:.3g}")
    if fails_above and rounded < value:
        rounded = float(f"{math.nextafter(rounded, math.inf) + 10 ** (math.floor(math.log10(abs(value))) - 2):.3g}")
    elif not fails_above and rounded > value:
        rounded = float(f"{rounded - 10 ** (math.floor(math.log10(abs(value))) - 2):.3g}")
    return rounded


def allowed_breaches(days: float) -> int:
    """At most one false alarm per FALSE_ALARM_BUDGET_DAYS: 0 for a healthy period shorter than that."""
    return int(days // FALSE_ALARM_BUDGET_DAYS)


@dataclass(frozen=True)
class Bound:
    """One threshold of the spec compared with one number per evaluation."""

    field: str  # where it is set, e.g. spec.performance[0].min
    current: float
    fails_above: bool  # a maximum (fails above it); otherwise a minimum or a significance level
    valid: tuple[float, float] = (-math.inf, math.inf)  # (exclusive lower, inclusive upper) the spec accepts


def threshold_fields(spec: DriftPolicySpec) -> dict[str, list[Bound]]:
    """check name -> its bounds (a check with both min and max has two), for every threshold a user
    sets as a value compared with one number per evaluation (drift is handled per feature)."""
    fields: dict[str, list[Bound]] = {}
    for i, check in enumerate(spec.performance):
        name = f"performance/{check.metric.value}" + (f"/{check.class_label}" if check.class_label else "")
        fields[name] = _bounds(f"spec.performance[{i}]", check.min, check.max, lower=0.0)
    for i, custom in enumerate(spec.checks):
        fields[f"custom/{custom.name}"] = _bounds(f"spec.checks[{i}]", custom.min, custom.max)
    if spec.outliers is not None:
        fields["outliers/rate"] = [Bound("spec.outliers.maxRate", spec.outliers.max_rate, True, (-math.ulp(0.0), _BELOW_ONE))]
    if spec.agreement is not None:
        fields["agreement/rate"] = [Bound("spec.agreement.minRate", spec.agreement.min_rate, False, (0.0, 1.0))]
    if spec.comparison is not None:
        for metric in spec.comparison.metrics:
            fields[f"comparison/{metric}"] = [Bound("spec.comparison.alpha", spec.comparison.alpha, False, (0.0, _BELOW_ONE))]
    return {name: bounds for name, bounds in fields.items() if bounds}


def _bounds(path: str, minimum: float | None, maximum: float | None, lower: float = -math.inf) -> list[Bound]:
    found = []
    if minimum is not None:
        found.append(Bound(f"{path}.min", minimum, False, (lower, math.inf)))
    if maximum is not None:
        found.append(Bound(f"{path}.max", maximum, True))
    return found


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
