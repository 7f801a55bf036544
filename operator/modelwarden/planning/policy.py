"""DriftPolicy decisions as pure functions: next status, Events, alert and retraining from the
previous status and what was just observed.

State lives in status only (never in memory), so a restarted operator decides exactly as the old
one would have: the breach identity is ``status.failingSince`` (the first Fail of the current
streak), so a breach's retraining Job always gets the same name and is created at most once.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field

from modelwarden.api.common import condition_true, find_condition, set_condition
from modelwarden.api.driftpolicy import (ActionRecord, DriftPolicyPhase, DriftPolicySpec, DriftPolicyStatus, Evaluation,
                                         EvaluationSummary, RetrainStatus, Verdict)
from modelwarden.api.policystatus import PASSING
from modelwarden.planning.budget import spent
from modelwarden.contract.kubernetes import RETRAIN_ANNOTATION
from modelwarden.planning.notification import AlertContext, Notification, build_notification
from modelwarden.planning.retraining import (JobOutcome, JobState, RetrainRequest, RetrainTarget, Trigger, note_unreadable,
                                             note_unobservable, record_result, retrain_job_name, run_noun)
from modelwarden.planning.types import Event
from modelwarden.planning.winner import next_winner

RING_BUFFER = 50
FIRST_EVALUATION_SPREAD = datetime.timedelta(seconds=30)
MIN_LAG_TOLERANCE = datetime.timedelta(seconds=10)
MAX_EVALUATION_BUDGET = datetime.timedelta(minutes=5)
Phase = DriftPolicyPhase


@dataclass(frozen=True)
class PolicyContext:
    """The policy and its target as read this tick."""

    name: str
    namespace: str
    uid: str
    spec: DriftPolicySpec
    generation: int | None
    created: datetime.datetime | None
    alert: AlertContext
    rollout_started: datetime.datetime | None = None  # when the judged canary's current split began (a retry starts anew)
    retrain_target: RetrainTarget = field(default_factory=RetrainTarget)

    @property
    def target_text(self) -> str:
        return self.alert.target()


@dataclass
class Step:
    """The outcome of one decision: the next status and what to do about it."""

    status: DriftPolicyStatus
    events: list[Event] = field(default_factory=list)
    notification: Notification | None = None
    retrain: RetrainRequest | None = None


def phase_offset(key: str) -> float:
    """A stable fraction in [0, 1) from a key: spreads the evaluations of many policies."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000


def cohort(ctx: PolicyContext) -> str:
    """The policies that judge one model's track: they come due at the same instants (for one
    interval), so their identical queries are fetched from Prometheus once."""
    return f"{ctx.namespace}/{ctx.spec.target_ref.name}/{ctx.spec.track.value}"


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MICROSECOND = datetime.timedelta(microseconds=1)


def on_grid(earliest: datetime.datetime, step: datetime.timedelta, phase: float) -> datetime.datetime:
    """The first instant at or after `earliest` of the grid phase*step + k*step (anchored at the
    epoch, in whole microseconds, so every process and restart computes the same instants)."""
    step_us = max(1, step // _MICROSECOND)
    offset_us = int(phase * step_us)
    after_us = (earliest - _EPOCH) // _MICROSECOND
    steps = -(-(after_us - offset_us) // step_us)  # ceiling division
    return _EPOCH + (offset_us + steps * step_us) * _MICROSECOND


def next_evaluation(ctx: PolicyContext, status: DriftPolicyStatus, now: datetime.datetime) -> datetime.datetime:
    """When the next evaluation is due: at once (`now`) after a spec change or when the judged
    version changed; otherwise on the cohort's grid (every spec.interval, at a phase derived from
    the model and track, so 1000 policies on 1000 models do not fire together while the policies
    of one model do), the first grid instant at least half an interval after the last evaluation
    (exactly one interval while on the grid). A new policy is evaluated at its first grid instant,
    or within a phase-derived share of 30 s when the grid is further away (a long interval)."""
    if status.observed_generation is not None and ctx.generation != status.observed_generation:
        return now
    if status.evaluated_version is not None and ctx.alert.version != status.evaluated_version:
        return now  # judge a new version (a new canary, a promotion, a rollback) at once
    phase = phase_offset(cohort(ctx))
    last = status.last_evaluation
    if last is None:
        created = ctx.created or now
        first = on_grid(created, ctx.spec.interval, phase)
        return first if first - created <= FIRST_EVALUATION_SPREAD else created + phase * FIRST_EVALUATION_SPREAD
    return on_grid(last.time + ctx.spec.interval / 2, ctx.spec.interval, phase)


def evaluation_due(ctx: PolicyContext, status: DriftPolicyStatus, now: datetime.datetime) -> bool:
    return now >= next_evaluation(ctx, status, now)


def evaluation_instant(ctx: PolicyContext, due: datetime.datetime, now: datetime.datetime) -> datetime.datetime:
    """The instant an evaluation due at `due` judges (its window ends there): the due time when it
    runs soon after it (within the lag tolerance and half an interval, so the evidence is never
    staler than that), so every policy of a cohort judges the same instant and their identical
    queries are shared, whichever worker gets to each first; `now` when it runs later than that."""
    return due if due <= now and now - due <= min(lag_tolerance(ctx.spec), ctx.spec.interval / 2) else now


def evaluation_budget(spec: DriftPolicySpec) -> datetime.timedelta:
    """How long one evaluation may take, all its queries and retries together: never more than
    the interval (the next one is due by then), and at most MAX_EVALUATION_BUDGET."""
    return min(spec.interval, MAX_EVALUATION_BUDGET)


def lag_tolerance(spec: DriftPolicySpec) -> datetime.timedelta:
    """How late an evaluation may run before the policy reports EvaluationLagging."""
    return max(MIN_LAG_TOLERANCE, spec.interval / 4)


def observe(ctx: PolicyContext, previous: DriftPolicyStatus, evaluation: Evaluation, now: datetime.datetime) -> Step:
    """Record one evaluation and decide: Events on transitions, alert, rollback record, retraining."""
    spec = ctx.spec
    if previous.evaluated_version is not None and ctx.alert.version != previous.evaluated_version:
        previous = _new_streak(previous)
    status = previous.model_copy(deep=True)
    status.evaluated_version = ctx.alert.version
    # Counted as budget.evaluation_level counted them for this look's level: per version, so looks at
    # a version not yet known (None) never make the first looks at the real one spend a second time.
    status.looks = (previous.looks if previous.evaluated_version == ctx.alert.version else 0) + spent(evaluation)
    verdict = evaluation.verdict
    failed = [r.check for r in evaluation.results if r.verdict == Verdict.FAIL]
    status.last_evaluation = evaluation
    status.evaluations = [*previous.evaluations, EvaluationSummary(time=evaluation.time, verdict=verdict, failed=failed[:64])][-RING_BUFFER:]
    status.observed_generation = ctx.generation
    if verdict == Verdict.FAIL:
        status.consecutive_failures = previous.consecutive_failures + 1
        status.failing_since = previous.failing_since or evaluation.time
    elif verdict in PASSING:
        status.consecutive_failures, status.failing_since = 0, None
    status.phase = {Verdict.PASS: Phase.PASSING, Verdict.WARNING: Phase.WARNING, Verdict.FAIL: Phase.FAILING,
                    Verdict.INSUFFICIENT_DATA: Phase.INSUFFICIENT_DATA, Verdict.ERROR: Phase.ERROR}[verdict]

    was_breached = condition_true(previous.conditions, "Breached")
    breached = verdict == Verdict.FAIL and status.consecutive_failures >= spec.failure_threshold
    kind = _failure_reason(failed)
    counted = f"{status.consecutive_failures}/{spec.failure_threshold}"
    step = Step(status)
    _set(status, "Ready", verdict != Verdict.ERROR, "Evaluated" if verdict != Verdict.ERROR else "EvaluationError",
         f"last evaluation: {verdict.value}", now, ctx.generation)
    if breached:
        _set(status, "Breached", True, kind, f"{counted} consecutive failing evaluations: {', '.join(failed)}", now, ctx.generation)
    elif verdict in PASSING or not find_condition(previous.conditions, "Breached"):
        _set(status, "Breached", False, "Passing" if verdict in PASSING else "BelowThreshold",
             "no breach", now, ctx.generation)
    _set_valid(status, ctx, now)
    step.events += next_winner(spec, status, evaluation, ctx.alert.version, ctx.rollout_started, now, ctx.generation)

    # Events on transitions (an alert's own Event replaces the transition Event of the same reason).
    if verdict == Verdict.FAIL and not breached and (previous.phase != Phase.FAILING or kind != _failure_reason(_last_failed(previous))):
        step.events.append(Event("Warning", kind, f"{ctx.target_text}: {', '.join(failed)} failed ({counted}; "
                                                  f"no action before {spec.failure_threshold} in a row)"))
    elif verdict == Verdict.ERROR and previous.phase != Phase.ERROR:
        step.events.append(Event("Warning", "EvaluationError", f"{ctx.target_text}: {_problems(evaluation)}"))
    elif verdict == Verdict.INSUFFICIENT_DATA and previous.phase != Phase.INSUFFICIENT_DATA:
        step.events.append(Event("Normal", "InsufficientData", f"{ctx.target_text}: {_problems(evaluation)} "
                                                               f"(minSamples {spec.min_samples}); never acts"))
    elif verdict == Verdict.WARNING and previous.phase != Phase.WARNING:
        if was_breached or previous.phase == Phase.FAILING:  # a Warning passes: out of the failure first
            step.events.append(Event("Normal", "Recovered", f"{ctx.target_text} passes every check again (with a drift warning)"))
        step.events.append(Event("Warning", "DriftWarning", f"{ctx.target_text}: {_problems(evaluation)}; never acts"))
    elif verdict == Verdict.PASS and (was_breached or previous.phase == Phase.FAILING):
        step.events.append(Event("Normal", "Recovered", f"{ctx.target_text} passes every check again"))

    actions = _breach_actions(spec) if breached else []
    alert_kind = _alert_kind(spec, verdict, breached)
    entered = (breached and not was_breached) or (alert_kind is not None and not breached and previous.phase != status.phase)
    if verdict in PASSING and was_breached:  # first: the breach alert must close, even if a warning is due too
        step.notification = _notify(ctx, "Breach", "Recovered", evaluation, counted, [], now, resolved=True)
    elif alert_kind is not None and (entered or _repeat_due(spec, previous, now)):
        reason = kind if alert_kind == "Breach" else alert_kind
        step.notification = _notify(ctx, alert_kind, reason, evaluation, counted, actions, now)
        status.last_alert_at = now
        status.last_action = ActionRecord(type="Alert", time=now, reason=step.notification.subject)
    if step.notification is not None:
        step.events = [e for e in step.events if e.reason != step.notification.reason]

    if breached and not was_breached and spec.actions.rollback:
        status.last_action = ActionRecord(type="Rollback", time=now, reason=f"{', '.join(failed)} failed {counted}")
        step.events.append(Event("Warning", "RollbackRequested",
                                 f"{ctx.target_text}: {counted} failing evaluations; the ModelDeployment controller rolls the "
                                 f"{spec.track.value} track back"))
    if breached:
        _decide_breach_retrain(ctx, status, evaluation, failed, counted, now, step, newly=not was_breached)
    return step


def _new_streak(status: DriftPolicyStatus) -> DriftPolicyStatus:
    """Failures of one version never count against another: the streak and breach start over."""
    return status.model_copy(update={
        "consecutive_failures": 0, "failing_since": None, "phase": Phase.PENDING, "looks": 0, "winner": None,
        "conditions": [c for c in status.conditions if c.type not in ("Breached", "Winner")],
    })


def suspended(ctx: PolicyContext, previous: DriftPolicyStatus, now: datetime.datetime) -> Step:
    status = previous.model_copy(deep=True)
    status.phase = Phase.SUSPENDED
    status.observed_generation = ctx.generation
    _set(status, "Ready", False, "Suspended", "spec.suspend is true: not evaluating", now, ctx.generation)
    _set_valid(status, ctx, now)
    return Step(status)


def target_missing(ctx: PolicyContext, previous: DriftPolicyStatus, now: datetime.datetime) -> Step:
    """No evaluation without a target: Error, which neither counts nor resets failures."""
    status = previous.model_copy(deep=True)
    status.phase = Phase.ERROR
    status.observed_generation = ctx.generation
    message = f"ModelDeployment {ctx.spec.target_ref.name} not found"
    _set(status, "Ready", False, "TargetNotFound", message, now, ctx.generation)
    _set_valid(status, ctx, now)
    step = Step(status)
    if previous.phase != Phase.ERROR:
        step.events.append(Event("Warning", "EvaluationError", message))
    return step


def follow_job(previous: DriftPolicyStatus, job: JobState | None, now: datetime.datetime) -> Step:
    """Move status.lastRetrain from Running to Succeeded/Failed as the Job finishes (or disappears)."""
    status = previous.model_copy(deep=True)
    step = Step(status)
    retrain = status.last_retrain
    if retrain is None or retrain.outcome != JobOutcome.RUNNING:
        return step
    if job is None:
        job = JobState(retrain.job_name, JobOutcome.FAILED, now, f"the {run_noun(retrain.backend)} no longer exists")
    note_unobservable(retrain, job, step.events)
    unreadable = job.result.unavailable if job.result is not None else None
    if unreadable:  # read again next tick
        note_unreadable(retrain, unreadable, step.events)
    if job.outcome == JobOutcome.RUNNING or unreadable:
        return step
    retrain.outcome, retrain.finished_at = job.outcome.value, job.finished_at or now
    took = f" after {int((retrain.finished_at - retrain.started_at).total_seconds())}s"
    detail = f": {job.message}" if job.message else ""
    step.events.append(Event("Normal" if job.outcome == JobOutcome.SUCCEEDED else "Warning", f"Retrain{job.outcome.value}",
                             f"{run_noun(retrain.backend)} {job.name} ({retrain.trigger}) {job.outcome.value.lower()}{took}{detail}"))
    if job.outcome == JobOutcome.SUCCEEDED:
        record_result(retrain, job.result, step.events)
    return step


def manual_retrain(ctx: PolicyContext, previous: DriftPolicyStatus, token: str | None, now: datetime.datetime) -> Step:
    """The modelwarden.io/retrain annotation: one Job per new token, once no Job is running."""
    status = previous.model_copy(deep=True)
    step = Step(status)
    if not token or token == previous.retrain_token or _running(previous):
        return step
    if previous.last_retrain is not None and previous.last_retrain.job_name == retrain_job_name(ctx.name, f"manual:{token}"):
        status.retrain_token = token  # its run was adopted (the write recording the token was lost): never again
        return step
    if ctx.spec.actions.retrain is None:
        status.retrain_token = token
        step.events.append(Event("Warning", "RetrainFailed", f"{RETRAIN_ANNOTATION}={token}: spec.actions.retrain is not set"))
        return step
    step.retrain = RetrainRequest(retrain_job_name(ctx.name, f"manual:{token}"), Trigger.MANUAL,
                                  f"requested with {RETRAIN_ANNOTATION}={token}", _failing_checks(previous.last_evaluation), token)
    return step


def launched(ctx: PolicyContext, previous: DriftPolicyStatus, request: RetrainRequest, now: datetime.datetime) -> Step:
    """Record a created (or already existing) retraining Job."""
    status = previous.model_copy(deep=True)
    backend = ctx.spec.actions.retrain.backend if ctx.spec.actions.retrain else "Job"
    status.last_retrain = RetrainStatus(job_name=request.job_name, started_at=now, trigger=request.trigger.value,
                                        backend=None if backend == "Job" else backend)
    status.last_action = ActionRecord(type="Retrain", time=now, reason=request.reason)
    if request.token is not None:
        status.retrain_token = request.token
    return Step(status, [Event("Normal", "RetrainLaunched",
                               f"{run_noun(backend)} {request.job_name} for {ctx.target_text} ({request.trigger.value}): {request.reason}")])


def _decide_breach_retrain(ctx: PolicyContext, status: DriftPolicyStatus, evaluation: Evaluation, failed: list[str],
                           counted: str, now: datetime.datetime, step: Step, newly: bool) -> None:
    retrain = ctx.spec.actions.retrain
    if retrain is None or not retrain.on_breach or status.failing_since is None:
        return
    name = retrain_job_name(ctx.name, f"breach:{status.failing_since.isoformat()}")
    last = status.last_retrain
    if last is not None and last.job_name == name:
        return  # this breach already has its Job
    blocked = None
    if _running(status):
        blocked = f"{run_noun(last.backend)} {last.job_name} is still running"  # type: ignore[union-attr]
    elif last is not None and now - last.started_at < retrain.cooldown:
        blocked = f"cooldown until {(last.started_at + retrain.cooldown).isoformat()}"
    if blocked:
        if newly:
            step.events.append(Event("Normal", "RetrainSkipped", f"{ctx.target_text}: not retraining yet: {blocked}"))
        return
    step.retrain = RetrainRequest(name, Trigger.BREACH, f"{', '.join(failed)} failed {counted}", _failing_checks(evaluation))


def _failing_checks(evaluation: Evaluation | None) -> tuple[dict[str, object], ...]:
    if evaluation is None:
        return ()
    return tuple({"check": r.check, "value": r.value, "threshold": r.threshold, "message": r.message}
                 for r in evaluation.results if r.verdict == Verdict.FAIL)


def _alert_kind(spec: DriftPolicySpec, verdict: Verdict, breached: bool) -> str | None:
    alert = spec.actions.alert
    if breached:
        return "Breach"
    if verdict == Verdict.ERROR and alert is not None and alert.on_error:
        return "EvaluationError"
    if verdict == Verdict.INSUFFICIENT_DATA and alert is not None and alert.on_insufficient_data:
        return "InsufficientData"
    if verdict == Verdict.WARNING and alert is not None and alert.on_warning:
        return "DriftWarning"
    return None


def _repeat_due(spec: DriftPolicySpec, previous: DriftPolicyStatus, now: datetime.datetime) -> bool:
    last = previous.last_alert_at
    return last is None or now - last >= _repeat_interval(spec)


def _repeat_interval(spec: DriftPolicySpec) -> datetime.timedelta:
    return spec.actions.alert.repeat_interval if spec.actions.alert else datetime.timedelta(hours=1)


def _notify(ctx: PolicyContext, kind: str, reason: str, evaluation: Evaluation, counted: str, actions: list[str],
            now: datetime.datetime, resolved: bool = False) -> Notification:
    # An unrefreshed alert outlives its repeat interval by two evaluations, then expires by itself.
    expires = _repeat_interval(ctx.spec) + 2 * ctx.spec.interval
    return build_notification(ctx.alert, kind, reason, evaluation, counted, actions, now, expires, resolved)


def _breach_actions(spec: DriftPolicySpec) -> list[str]:
    actions = ["alert"]
    if spec.actions.rollback:
        actions.append(f"rollback of the {spec.track.value} track")
    if spec.actions.retrain is not None and spec.actions.retrain.on_breach:
        actions.append("retraining Job")
    return actions


def _failure_reason(failed: list[str]) -> str:
    return "DriftDetected" if any(check.startswith("drift/") for check in failed) else "QualityDegraded"


def _last_failed(status: DriftPolicyStatus) -> list[str]:
    last = status.last_evaluation
    return [r.check for r in last.results if r.verdict == Verdict.FAIL] if last else []


def _problems(evaluation: Evaluation) -> str:
    notable = [r for r in evaluation.results if r.verdict in (Verdict.ERROR, Verdict.INSUFFICIENT_DATA, Verdict.WARNING)]
    return "; ".join(f"{r.check}: {r.message or r.verdict.value}" for r in notable[:5]) or evaluation.verdict.value


def _running(status: DriftPolicyStatus) -> bool:
    return status.last_retrain is not None and status.last_retrain.outcome == JobOutcome.RUNNING


def _set(status: DriftPolicyStatus, type_: str, value: bool, reason: str, message: str, now: datetime.datetime,
         generation: int | None) -> None:
    status.conditions = set_condition(status.conditions, type_, value, reason, message, now, generation)


def _set_valid(status: DriftPolicyStatus, ctx: PolicyContext, now: datetime.datetime) -> None:
    """The loop only runs for a valid spec: clear an InvalidSpec left by an earlier generation."""
    _set(status, "InvalidSpec", False, "Valid", "the spec is valid", now, ctx.generation)
