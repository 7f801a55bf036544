"""One DriftPolicy tick as one pure decision: `needs()` says what to gather, `decide_tick()` turns
the gathered observations into the next status and the actions to execute.

The controller runs gather -> decide -> execute -> persist once; it never stitches partial
decisions together. The one outcome only execution can tell (creating the retraining Job failed)
has its own pure answer, `Tick.launch_failed()`, so the status written never claims a Job the
API server refused.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from modelwarden.api.common import find_condition, set_condition
from modelwarden.api.driftpolicy import DriftPolicyStatus, Evaluation
from modelwarden.builders.jobs import PolicyOwner, RetrainContext, retrain_cronjob
from modelwarden.contract.kubernetes import EVALUATE_ANNOTATION
from modelwarden.contract.retraining import breach_id
from modelwarden.planning import policy
from modelwarden.planning.notification import Notification
from modelwarden.planning.policy import PolicyContext
from modelwarden.planning.retraining import JobOutcome, JobState, RetrainRequest, RetrainRun, adopt_unrecorded_job, run_noun
from modelwarden.planning.types import Event


@dataclass(frozen=True)
class Needs:
    """What this tick must read before deciding."""

    job: str | None  # the running retraining Job to follow, by name
    evaluation: datetime.datetime | None  # an evaluation is due: query Prometheus at this instant


@dataclass(frozen=True)
class Observations:
    """What was gathered for this tick."""

    target_found: bool  # the targeted ModelDeployment exists
    cronjob: str | None = None  # the name of this policy's CronJob, if the watch shows one
    jobs: tuple[JobState, ...] = ()  # this policy's retraining Jobs, as the watch shows them
    job: JobState | None = None  # the running Job `needs().job` named (None: it is gone)
    evaluation: Evaluation | None = None  # present when `needs().evaluation` named an instant
    retrain_token: str | None = None  # the modelwarden.io/retrain annotation
    evaluate_token: str | None = None  # the modelwarden.io/evaluate-now annotation


@dataclass(frozen=True)
class Tick:
    """The decision: the status to write once, and what to execute."""

    status: DriftPolicyStatus
    events: tuple[Event, ...] = ()
    notification: Notification | None = None
    retrain: RetrainRequest | None = None  # the retraining the status records as launched
    run: RetrainRun | None = None  # launch this run (one that exists already counts as launched)
    cronjob: dict[str, Any] | None = None  # the schedule's CronJob as it should be (applied when it differs)
    delete_cronjob: str | None = None  # the schedule is gone: delete this CronJob
    finished: JobOutcome | None = None  # the followed Job finished this tick
    rollback_requested: bool = False
    unlaunched: DriftPolicyStatus | None = field(default=None, repr=False)  # the status if creating the Job fails
    next_at: datetime.datetime | None = None  # when the next evaluation is due (None: none will run: suspended, no target)

    def launch_failed(self, error: str) -> Tick:
        """The run could not be launched: record nothing of it (a later tick asks again) and say why."""
        assert self.retrain is not None and self.unlaunched is not None and self.status.last_retrain is not None
        noun = run_noun(self.status.last_retrain.backend)
        failed = Event("Warning", "RetrainFailed", f"cannot launch {noun} {self.retrain.job_name}: {error}")
        events = tuple(e for e in self.events if e.reason != "RetrainLaunched")
        return replace(self, status=self.unlaunched, events=(*events, failed), retrain=None, run=None, unlaunched=None)


def needs(ctx: PolicyContext, previous: DriftPolicyStatus, jobs: Sequence[JobState], target_found: bool,
          now: datetime.datetime, evaluate_token: str | None = None) -> Needs:
    status = adopt_unrecorded_job(previous, list(jobs), _backend(ctx), ctx.created)
    running = status.last_retrain.job_name if status.last_retrain and status.last_retrain.outcome == JobOutcome.RUNNING else None
    if ctx.spec.suspend or not target_found:
        return Needs(job=running, evaluation=None)
    if evaluate_token and evaluate_token != previous.evaluate_token:  # a person asked: judge now, off the grid
        return Needs(job=running, evaluation=now)
    due = policy.next_evaluation(ctx, status, now)
    return Needs(job=running, evaluation=policy.evaluation_instant(ctx, due, now) if now >= due else None)


def decide_tick(ctx: PolicyContext, previous: DriftPolicyStatus, seen: Observations, now: datetime.datetime) -> Tick:
    """Follow the running Job, judge the evaluation if one ran, take a manual trigger: one decision."""
    adopted = adopt_unrecorded_job(previous, list(seen.jobs), _backend(ctx), ctx.created)
    followed = policy.follow_job(adopted, seen.job, now)
    was_running = adopted.last_retrain is not None and adopted.last_retrain.outcome == JobOutcome.RUNNING
    outcome = followed.status.last_retrain.outcome if followed.status.last_retrain else None
    finished = outcome if was_running and outcome != JobOutcome.RUNNING else None
    step = None
    if ctx.spec.suspend:
        step = policy.suspended(ctx, followed.status, now)
    elif not seen.target_found:
        step = policy.target_missing(ctx, followed.status, now)
    elif seen.evaluation is not None:
        step = policy.observe(ctx, followed.status, seen.evaluation, now)
        _record_lag(ctx, followed.status, step.status, now)
    events = list(followed.events)
    if adopted.last_retrain is not None and adopted.last_retrain != previous.last_retrain:
        run = adopted.last_retrain
        events.insert(0, Event("Normal", "RetrainAdopted", f"{run_noun(run.backend)} {run.job_name} ({run.trigger}) was launched, but "
                                                          "the status write recording it was lost: followed from here"))
    status, notification, retrain = followed.status, None, None
    if step is not None:
        status, notification, retrain = step.status, step.notification, step.retrain
        events += step.events
    if seen.evaluate_token and seen.evaluate_token != status.evaluate_token:
        status = status.model_copy(update={"evaluate_token": seen.evaluate_token})
        asked = f"{EVALUATE_ANNOTATION}={seen.evaluate_token}"
        events.append(Event("Normal", "EvaluationRequested", f"{asked}: evaluated at once ({seen.evaluation.verdict.value})")
                      if step is not None and seen.evaluation is not None
                      else Event("Normal", "RequestIgnored", f"evaluate-now ({asked}) ignored: "
                                                             + ("spec.suspend is true" if ctx.spec.suspend else "no target")))
    if retrain is None and not ctx.spec.suspend:
        manual = policy.manual_retrain(ctx, status, seen.retrain_token, now)
        status, retrain = manual.status, manual.retrain
        events += manual.events
    unlaunched = run = None
    owner = PolicyOwner(ctx.name, ctx.namespace, ctx.uid)
    if retrain is not None:
        assert ctx.spec.actions.retrain is not None
        unlaunched = status
        context = _retrain_context(ctx, status, retrain)
        run = RetrainRun(retrain.job_name, retrain.trigger.value, context, owner)
        launched = policy.launched(ctx, status, retrain, now)
        status = launched.status
        assert status.last_retrain is not None
        status.last_retrain = status.last_retrain.model_copy(update={
            "breach_id": context.breach_id, "checks": [str(c.get("check")) for c in retrain.failing_checks][:32],
            "window_start": context.window_start, "window_end": context.window_end,
            "parent_version": context.stable_version or None})
        events += launched.events
    cronjob, delete = _schedule(ctx, owner, seen)
    return Tick(
        status=status, events=tuple(events), notification=notification, retrain=retrain, run=run, cronjob=cronjob,
        delete_cronjob=delete, finished=JobOutcome(finished) if finished else None,
        rollback_requested=any(e.reason == "RollbackRequested" for e in events), unlaunched=unlaunched,
        next_at=None if ctx.spec.suspend or not seen.target_found else policy.next_evaluation(ctx, status, now),
    )


def _backend(ctx: PolicyContext) -> str | None:
    return ctx.spec.actions.retrain.backend if ctx.spec.actions.retrain is not None else None


def _record_lag(ctx: PolicyContext, before: DriftPolicyStatus, after: DriftPolicyStatus, ran_at: datetime.datetime) -> None:
    """EvaluationLagging: True while evaluations run later than their due time allows (the operator
    is behind: too many policies for its workers, or a slow Prometheus); cleared by one on time.
    Shown only once it has been true, so a policy that was never late carries no such condition."""
    late = ran_at - policy.next_evaluation(ctx, before, ran_at)
    tolerance = policy.lag_tolerance(ctx.spec)
    if late > tolerance:
        message = f"this evaluation ran {late.total_seconds():.1f}s after it was due (tolerance {tolerance.total_seconds():g}s)"
        after.conditions = set_condition(after.conditions, "EvaluationLagging", True, "Late", message, ran_at, ctx.generation)
    elif find_condition(after.conditions, "EvaluationLagging") is not None:
        after.conditions = set_condition(after.conditions, "EvaluationLagging", False, "OnTime",
                                         f"evaluations run within {tolerance.total_seconds():g}s of their due time",
                                         ran_at, ctx.generation)


def _schedule(ctx: PolicyContext, owner: PolicyOwner, seen: Observations) -> tuple[dict[str, Any] | None, str | None]:
    """The CronJob spec.actions.retrain.schedule wants, or the existing one to delete once it is gone.
    While the target is missing, what runs is kept as it is."""
    retrain = ctx.spec.actions.retrain
    if retrain is None or not retrain.schedule or retrain.job_template is None:
        return None, seen.cronjob
    if not seen.target_found:
        return None, None
    context = RetrainContext(model=ctx.alert.model, namespace=ctx.namespace, track=ctx.alert.track, policy=ctx.name,
                             reason=f"schedule {retrain.schedule}", version=ctx.alert.version or "")
    return retrain_cronjob(owner, retrain.job_template, retrain.schedule, context), None


def _retrain_context(ctx: PolicyContext, status: DriftPolicyStatus, request: RetrainRequest) -> RetrainContext:
    """What the retraining code is told: the model, the version judged, why, and the window judged."""
    last = status.last_evaluation
    end = last.time if last else None
    target = ctx.retrain_target
    return RetrainContext(
        model=ctx.alert.model, namespace=ctx.namespace, track=ctx.alert.track, policy=ctx.name, reason=request.reason,
        version=ctx.alert.version or "", failing_checks=request.failing_checks,
        window_start=end - ctx.spec.window if end else None, window_end=end,
        breach_id=breach_id(ctx.namespace, request.job_name), stable_version=target.stable_version,
        stable_model_uri=target.stable_model_uri, mlflow_tracking_uri=target.mlflow_tracking_uri,
        reference=ctx.spec.reference.to_wire() if ctx.spec.reference else None,
    )
