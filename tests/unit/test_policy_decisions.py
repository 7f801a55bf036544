"""planning.policy: the DriftPolicy decisions, table-driven over verdict sequences."""

from __future__ import annotations

import datetime

import pytest

from modelwarden.api.driftpolicy import CheckResult, DriftPolicySpec, DriftPolicyStatus, Evaluation, RetrainStatus, Verdict
from modelwarden.planning import policy as decide
from modelwarden.planning import retraining
from modelwarden.planning.notification import AlertContext
from modelwarden.contract.retraining import ReportedModel
from modelwarden.planning.retraining import JobOutcome, JobResult, JobState, retrain_job_name

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
P, F, I, E, W = Verdict.PASS, Verdict.FAIL, Verdict.INSUFFICIENT_DATA, Verdict.ERROR, Verdict.WARNING
CHECK = {P: "drift/features", F: "drift/features", I: "performance/accuracy", E: "custom/errors", W: "drift/features"}


def spec(**overrides) -> DriftPolicySpec:
    body = {"targetRef": {"name": "fraud"}, "track": "canary", "interval": "1m", "failureThreshold": 2,
            "performance": [{"metric": "accuracy", "min": 0.8}],
            "actions": {"rollback": True, "retrain": {"jobTemplate": {"template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}}, "cooldown": "1h"}}}
    body.update(overrides)
    return DriftPolicySpec.model_validate(body)


def ctx(**overrides) -> decide.PolicyContext:
    return decide.PolicyContext(
        name="gate", namespace="ml", uid="uid-1", spec=spec(**overrides), generation=1, created=T0,
        alert=AlertContext(policy="gate", namespace="ml", modeldeployment="fraud", model="fraud", track="canary", version="2"),
    )


def evaluation(verdict: Verdict, at: datetime.datetime, check: str | None = None) -> Evaluation:
    result = CheckResult(check=check or CHECK[verdict], verdict=verdict, value=0.5, threshold=0.25, samples=900)
    return Evaluation(time=at, verdict=verdict, samples=900, results=[result])


def run(context: decide.PolicyContext, verdicts: list[Verdict], status: DriftPolicyStatus | None = None) -> list[decide.Step]:
    status = status or DriftPolicyStatus()
    steps = []
    for i, verdict in enumerate(verdicts):
        now = T0 + datetime.timedelta(minutes=i)
        step = decide.observe(context, status, evaluation(verdict, now), now)
        if step.retrain is not None:
            step = decide.Step(decide.launched(context, step.status, step.retrain, now).status, step.events, step.notification, step.retrain)
        steps.append(step)
        status = step.status
    return steps


# verdicts -> consecutiveFailures, phase, alerts (notification reasons), retrains, Event reasons per step
CASES = {
    "passes": ([P, P], 0, "Passing", [None, None], 0, [[], []]),
    "one fail is not a breach": ([P, F, P], 0, "Passing", [None, None, None], 0, [[], ["DriftDetected"], ["Recovered"]]),
    "threshold reached acts once": ([F, F, F], 3, "Failing", [None, "DriftDetected", None], 1,
                                    [["DriftDetected"], ["RollbackRequested"], []]),
    "insufficient data neither counts nor resets": ([F, I, F], 2, "Failing", [None, None, "DriftDetected"], 1,
                                                    [["DriftDetected"], ["InsufficientData"], ["RollbackRequested"]]),
    "errors neither count nor reset": ([F, E, E, F], 2, "Failing", [None, None, None, "DriftDetected"], 1,
                                       [["DriftDetected"], ["EvaluationError"], [], ["RollbackRequested"]]),
    "never acts on errors alone": ([E, E, E, I, I], 0, "InsufficientData", [None] * 5, 0,
                                   [["EvaluationError"], [], [], ["InsufficientData"], []]),
    "recovery resolves the alert": ([F, F, P], 0, "Passing", [None, "DriftDetected", "Recovered"], 1,
                                    [["DriftDetected"], ["RollbackRequested"], []]),
    # A Warning passes: it resets the streak, is announced once per transition, and never acts.
    "warnings never act": ([W, W, W, W], 0, "Warning", [None] * 4, 0, [["DriftWarning"], [], [], []]),
    "a warning resets the streak": ([F, W, F, P, W], 0, "Warning", [None] * 5, 0,
                                    [["DriftDetected"], ["Recovered", "DriftWarning"], ["DriftDetected"], ["Recovered"], ["DriftWarning"]]),
    "a warning after a breach resolves it": ([F, F, W], 0, "Warning", [None, "DriftDetected", "Recovered"], 1,
                                             [["DriftDetected"], ["RollbackRequested"], ["DriftWarning"]]),
}


def test_a_warning_alerts_only_when_asked_and_once_per_transition():
    alerting = ctx(actions={"alert": {"onWarning": True, "webhook": {"url": "https://hooks.example/x"}}})
    steps = run(alerting, [W, W, P, W])
    assert [s.notification.reason if s.notification else None for s in steps] == ["DriftWarning", None, None, "DriftWarning"]
    assert all(not s.events or s.events[0].reason != "DriftWarning" for s in steps)  # the alert's own Event replaces it
    # A breach that ends in a Warning is resolved, warning alert or not: the breach alert must not stay open.
    after_breach = run(alerting, [F, F, F, W])
    assert [(s.notification.reason, s.notification.resolved) if s.notification else None for s in after_breach][-1] == ("Recovered", True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdict_sequences(name):
    verdicts, consecutive, phase, alerts, retrains, events = CASES[name]
    steps = run(ctx(), verdicts)
    final = steps[-1].status
    assert final.consecutive_failures == consecutive and final.phase.value == phase
    assert [s.notification.reason if s.notification else None for s in steps] == alerts
    assert sum(s.retrain is not None for s in steps) == retrains
    assert [[e.reason for e in s.events] for s in steps] == events
    assert len(final.evaluations) == len(verdicts)


def test_breach_identity_names_the_job_and_survives_interruptions():
    steps = run(ctx(), [F, I, F, E, F])
    first_fail = steps[0].status.failing_since
    assert first_fail == T0 and steps[-1].status.failing_since == T0
    name = retrain_job_name("gate", f"breach:{T0.isoformat()}")
    assert [s.retrain.job_name for s in steps if s.retrain] == [name]
    assert steps[-1].status.last_retrain.job_name == name
    # the same breach decided again from the same status (a restart) names the same Job
    again = decide.observe(ctx(), steps[1].status, evaluation(F, T0 + datetime.timedelta(minutes=2)), T0 + datetime.timedelta(minutes=2))
    assert again.retrain.job_name == name


def test_new_breach_after_recovery_waits_for_cooldown_and_a_running_job():
    steps = run(ctx(), [F, F, P, F, F])
    assert [s.retrain is not None for s in steps] == [False, True, False, False, False]
    assert "RetrainSkipped" in [e.reason for e in steps[-1].events]  # the Job of the first breach is still running
    finished = steps[-1].status.model_copy(deep=True)
    finished.last_retrain.outcome = "Succeeded"
    later = T0 + datetime.timedelta(minutes=30)
    assert decide.observe(ctx(), finished, evaluation(F, later), later).retrain is None  # cooldown 1h
    much_later = T0 + datetime.timedelta(hours=2)
    assert decide.observe(ctx(), finished, evaluation(F, much_later), much_later).retrain is not None


def test_alert_repeats_only_after_repeat_interval():
    context = ctx(actions={"alert": {"repeatInterval": "5m"}})
    steps = run(context, [F] * 9)
    assert [i for i, s in enumerate(steps) if s.notification] == [1, 6]
    assert steps[6].status.last_alert_at == T0 + datetime.timedelta(minutes=6)


@pytest.mark.parametrize("flag,verdict,reason", [("onError", E, "EvaluationError"), ("onInsufficientData", I, "InsufficientData")])
def test_optional_alerts_for_error_and_insufficient_data(flag, verdict, reason):
    steps = run(ctx(actions={"alert": {flag: True}}), [verdict, verdict, P, verdict])
    assert [s.notification.reason if s.notification else None for s in steps] == [reason, None, None, reason]
    assert all(reason not in [e.reason for e in s.events] for s in steps if s.notification)  # the alert's Event replaces it
    assert all(s.retrain is None for s in steps) and steps[-1].status.consecutive_failures == 0


def test_quality_failures_are_quality_degraded_and_conditions_follow():
    context = ctx()
    status = DriftPolicyStatus()
    for minute in range(2):
        now = T0 + datetime.timedelta(minutes=minute)
        step = decide.observe(context, status, evaluation(F, now, check="performance/accuracy"), now)
        status = step.status
    assert step.notification.reason == "QualityDegraded" and step.notification.kind == "Breach"
    conditions = {c.type: (c.status.value, c.reason) for c in status.conditions}
    assert conditions == {"Ready": ("True", "Evaluated"), "Breached": ("True", "QualityDegraded"), "InvalidSpec": ("False", "Valid")}
    assert status.last_action.type == "Rollback"


def test_ring_buffer_is_bounded():
    steps = run(ctx(failureThreshold=100), [F, P] * 30)
    buffer = steps[-1].status.evaluations
    assert len(buffer) == decide.RING_BUFFER and buffer[-1].time == T0 + datetime.timedelta(minutes=59)


def test_no_rollback_record_without_rollback():
    steps = run(ctx(actions={"rollback": False}), [F, F])
    assert "RollbackRequested" not in [e.reason for e in steps[1].events]
    assert steps[1].notification is not None and steps[1].retrain is None


def test_evaluation_due_follows_interval_spec_changes_and_spreads_new_policies():
    """Pure schedule arithmetic on injected instants (no clock is read): the order of due times."""
    context = ctx()
    interval, tick = context.spec.interval, datetime.timedelta(microseconds=1)  # the grid's resolution
    first = decide.next_evaluation(context, DriftPolicyStatus(), T0)
    assert T0 <= first <= T0 + decide.FIRST_EVALUATION_SPREAD
    assert [decide.evaluation_due(context, DriftPolicyStatus(), at) for at in (first - tick, first)] == [False, True]
    status = DriftPolicyStatus(last_evaluation=evaluation(P, first), observed_generation=1)
    second = decide.next_evaluation(context, status, first)
    assert interval / 2 <= second - first < interval * 3 / 2  # back on the grid
    assert [decide.evaluation_due(context, status, at) for at in (second - tick, second)] == [False, True]
    on_grid = DriftPolicyStatus(last_evaluation=evaluation(P, second), observed_generation=1)
    assert decide.next_evaluation(context, on_grid, second) == second + interval  # then one interval apart
    changed = decide.PolicyContext(**{**context.__dict__, "generation": 2})
    assert decide.evaluation_due(changed, status, first + datetime.timedelta(seconds=1))
    # 1000 models: their phases spread evenly, so their policies do not fire together.
    offsets = [decide.phase_offset(f"ml/model-{i}/canary") for i in range(1000)]
    assert all(0 <= o < 1 for o in offsets) and max(sum(1 for o in offsets if k / 10 <= o < (k + 1) / 10) for k in range(10)) < 140


def other(context: decide.PolicyContext, **changes) -> decide.PolicyContext:
    return decide.PolicyContext(**{**context.__dict__, **changes})


def test_the_policies_of_one_model_and_track_come_due_together_and_others_apart():
    """A cohort (namespace, ModelDeployment, track) shares a grid: policies created at different
    times, with different uids, judge the same instants, so their identical queries are fetched once."""
    a = ctx()
    b = other(a, name="latency", uid="uid-2", created=T0 + datetime.timedelta(seconds=17), spec=spec(performance=[{"metric": "latency_p99", "max": 0.5}]))
    minute = datetime.timedelta(minutes=1)

    def second_instant(context):
        first = decide.next_evaluation(context, DriftPolicyStatus(), context.created)
        evaluated = DriftPolicyStatus(last_evaluation=evaluation(P, first), observed_generation=1, evaluated_version="2")
        return decide.next_evaluation(context, evaluated, first)

    grid_a, grid_b = second_instant(a), second_instant(b)
    assert (grid_b - grid_a) % minute == datetime.timedelta(0)
    common = max(grid_a, grid_b)
    for context in (a, b):
        at_common = DriftPolicyStatus(last_evaluation=evaluation(P, common), observed_generation=1, evaluated_version="2")
        assert decide.next_evaluation(context, at_common, common) == common + minute
    stable = other(a, spec=spec(track="stable"))
    other_model = other(a, spec=spec(targetRef={"name": "churn"}))
    phases = {decide.phase_offset(decide.cohort(c)) for c in (a, b, stable, other_model)}
    assert len(phases) == 3  # a and b share one; the stable track and another model have their own


def test_off_the_grid_evaluations_return_to_it_at_least_half_an_interval_later():
    context = ctx()
    minute = datetime.timedelta(minutes=1)
    grid = decide.on_grid(T0, minute, decide.phase_offset(decide.cohort(context)))
    for offset_s in (1, 29, 31, 59):
        at = grid + datetime.timedelta(seconds=offset_s)  # e.g. a new version judged at once
        status = DriftPolicyStatus(last_evaluation=evaluation(P, at), observed_generation=1, evaluated_version="2")
        following = decide.next_evaluation(context, status, at)
        assert (following - grid) % minute == datetime.timedelta(0)
        assert minute / 2 <= following - at < minute * 3 / 2


def test_a_long_interval_still_evaluates_a_new_policy_within_30_seconds():
    hourly = ctx(interval="1h", window="1h")
    first = decide.next_evaluation(hourly, DriftPolicyStatus(), T0)
    assert T0 <= first <= T0 + decide.FIRST_EVALUATION_SPREAD
    status = DriftPolicyStatus(last_evaluation=evaluation(P, first), observed_generation=1, evaluated_version="2")
    second = decide.next_evaluation(hourly, status, first)
    assert datetime.timedelta(minutes=30) <= second - first < datetime.timedelta(minutes=90)
    assert decide.on_grid(second, datetime.timedelta(hours=1), decide.phase_offset(decide.cohort(hourly))) == second


def test_the_grid_is_exact_in_microseconds():
    step = datetime.timedelta(seconds=7)
    instant = decide.on_grid(T0, step, 0.25)
    assert instant >= T0 and decide.on_grid(instant, step, 0.25) == instant
    assert decide.on_grid(instant + datetime.timedelta(microseconds=1), step, 0.25) == instant + step


@pytest.mark.parametrize("job,outcome,event", [
    (JobState("j", JobOutcome.RUNNING), JobOutcome.RUNNING, None),
    (JobState("j", JobOutcome.SUCCEEDED, T0 + datetime.timedelta(minutes=5),
              result=JobResult(model=ReportedModel("models:/m/2", "2", "2"))), "Succeeded", ["RetrainSucceeded", "RetrainResult"]),
    (JobState("j", JobOutcome.SUCCEEDED, T0), "Succeeded", ["RetrainSucceeded", "RetrainResultInvalid"]),
    (JobState("j", JobOutcome.SUCCEEDED, T0, result=JobResult(unavailable="MLflow answered 503")), "Running", "RetrainResultUnavailable"),
    (JobState("j", JobOutcome.FAILED, T0, "BackoffLimitExceeded"), "Failed", "RetrainFailed"),
    (None, "Failed", "RetrainFailed"),
])
def test_follow_job(job, outcome, event):
    status = DriftPolicyStatus(last_retrain=RetrainStatus(job_name="j", started_at=T0, trigger="Breach"))
    step = decide.follow_job(status, job, T0 + datetime.timedelta(minutes=10))
    assert step.status.last_retrain.outcome == outcome
    assert [e.reason for e in step.events] == (event if isinstance(event, list) else [event] if event else [])
    assert status.last_retrain.outcome == "Running"  # the input is never mutated
    if job is not None and job.outcome is JobOutcome.SUCCEEDED and outcome == "Succeeded":
        recorded = step.status.last_retrain
        assert (recorded.result is None) == (job.result is None) and (recorded.result_error is None) == (job.result is not None)


def test_manual_retrain_once_per_token():
    context = ctx()
    step = decide.manual_retrain(context, DriftPolicyStatus(), "t1", T0)
    assert step.retrain.trigger == "Manual" and step.retrain.job_name == retrain_job_name("gate", "manual:t1")
    done = decide.launched(context, step.status, step.retrain, T0).status
    assert done.retrain_token == "t1" and done.last_retrain.trigger == "Manual"
    assert decide.manual_retrain(context, done, "t1", T0).retrain is None  # same token: nothing
    assert decide.manual_retrain(context, done, "t2", T0).retrain is None  # a Job is running: wait
    no_retrain = ctx(actions={})
    refused = decide.manual_retrain(no_retrain, DriftPolicyStatus(), "t3", T0)
    assert refused.retrain is None and refused.status.retrain_token == "t3" and refused.events[0].reason == "RetrainFailed"


def test_job_names_are_valid_and_deterministic():
    long = "p" * 253
    name = retrain_job_name(long, "breach:x")
    assert len(name) <= 63 and name == retrain_job_name(long, "breach:x") != retrain_job_name(long, "breach:y")


def test_target_missing_and_suspended_never_touch_counts():
    failing = run(ctx(), [F])[-1].status
    missing = decide.target_missing(ctx(), failing, T0)
    assert missing.status.phase.value == "Error" and missing.status.consecutive_failures == 1
    assert [e.reason for e in missing.events] == ["EvaluationError"]
    assert decide.target_missing(ctx(), missing.status, T0).events == []  # once per transition
    paused = decide.suspended(ctx(), failing, T0).status
    assert paused.phase.value == "Suspended" and paused.consecutive_failures == 1


def test_a_new_version_starts_a_new_streak():
    context = ctx()
    breached = run(context, [F, F, F])[-1].status
    assert breached.evaluated_version == "2" and breached.consecutive_failures == 3
    new_canary = decide.PolicyContext(**{**context.__dict__, "alert": AlertContext(**{**context.alert.__dict__, "version": "3"})})
    later = T0 + datetime.timedelta(minutes=3, seconds=1)
    assert decide.evaluation_due(new_canary, breached, later)  # at once, not after the interval
    step = decide.observe(new_canary, breached, evaluation(F, later), later)
    assert step.status.consecutive_failures == 1 and step.status.failing_since == later and step.status.evaluated_version == "3"
    assert step.notification is None and step.retrain is None and [e.reason for e in step.events] == ["DriftDetected"]
    assert next(c for c in step.status.conditions if c.type == "Breached").status.value == "False"


def test_a_job_whose_record_was_lost_is_adopted_and_no_second_job_follows():
    # A breach created its Job, but the status write recording it was refused; meanwhile the
    # judged version changed, so the next breach has another identity (another Job name).
    breached = run(ctx(), [F, F])[-1]
    lost = breached.status.model_copy(deep=True)
    lost.last_retrain = None
    job = JobState(breached.retrain.job_name, JobOutcome.RUNNING, started_at=T0 + datetime.timedelta(seconds=61), trigger="breach")
    scheduled = JobState("gate-schedule-1", JobOutcome.RUNNING, started_at=T0 + datetime.timedelta(minutes=5), trigger="schedule")
    adopted = retraining.adopt_unrecorded_job(lost, [job, scheduled])
    assert adopted.last_retrain.job_name == job.name and adopted.last_retrain.trigger == "Breach"
    status = adopted.model_copy(update={"failing_since": None, "consecutive_failures": 0})
    for minute in (10, 11):  # a new streak: another breach identity
        at = T0 + datetime.timedelta(minutes=minute)
        step = decide.observe(ctx(), status, evaluation(F, at), at)
        assert step.retrain is None  # the adopted Job is still running
        status = step.status
    assert status.consecutive_failures == 2 and status.last_retrain.job_name == job.name
    # Recorded Jobs and older ones are never adopted over the record.
    assert retraining.adopt_unrecorded_job(adopted, [job]) == adopted
    older = JobState("gate-retrain-old", JobOutcome.SUCCEEDED, started_at=T0 - datetime.timedelta(days=1), trigger="breach")
    assert retraining.adopt_unrecorded_job(adopted, [older]).last_retrain.job_name == job.name


def test_an_adopted_job_gets_back_the_lineage_it_was_told_and_a_garbled_context_is_ignored():
    from modelwarden.builders.jobs import RetrainContext
    from modelwarden.contract.retraining import CONTEXT_ANNOTATION
    from modelwarden.planning.retraining import job_state

    told = RetrainContext(model="fraud", namespace="ml", track="stable", policy="gate", reason="drift", version="3",
                          failing_checks=({"check": "drift/features", "verdict": "Fail"},), window_start=T0,
                          window_end=T0 + datetime.timedelta(minutes=30), breach_id="ml/gate-retrain-1", stable_version="3")
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "gate-retrain-1", "creationTimestamp": "2026-01-01T00:01:00Z", "labels": {"modelwarden.io/trigger": "breach"}},
           "spec": {"template": {"metadata": {"annotations": {CONTEXT_ANNOTATION: told.document()}}, "spec": {}}}}
    adopted = retraining.adopt_unrecorded_job(DriftPolicyStatus(), [job_state(job)]).last_retrain
    assert (adopted.job_name, adopted.breach_id, adopted.checks, adopted.parent_version) == (
        "gate-retrain-1", "ml/gate-retrain-1", ["drift/features"], "3")
    assert (adopted.window_start, adopted.window_end) == (told.window_start, told.window_end)  # the data window it was told
    job["spec"]["template"]["metadata"]["annotations"][CONTEXT_ANNOTATION] = '{"MODELWARDEN_WINDOW_START": "yesterday"}'
    garbled = retraining.adopt_unrecorded_job(DriftPolicyStatus(), [job_state(job)]).last_retrain
    assert garbled.job_name == "gate-retrain-1" and garbled.breach_id is None and garbled.checks == []


def test_a_succeeded_jobs_unreadable_result_is_said_once_and_read_again():
    from modelwarden.planning.retraining import JobResult

    running = DriftPolicyStatus(last_retrain=RetrainStatus(job_name="gate-retrain-1", started_at=T0, trigger="Breach"))
    job = JobState("gate-retrain-1", JobOutcome.SUCCEEDED, T0 + datetime.timedelta(minutes=5),
                   result=JobResult(unavailable="MLflow: connection refused"))
    step = decide.follow_job(running, job, T0 + datetime.timedelta(minutes=5))
    assert step.status.last_retrain.outcome == "Running" and "connection refused" in step.status.last_retrain.result_error
    assert [e.reason for e in step.events] == ["RetrainResultUnavailable"]
    again = decide.follow_job(step.status, job, T0 + datetime.timedelta(minutes=6))
    assert again.events == [] and again.status.last_retrain.outcome == "Running"
    model = ReportedModel("models:/fraud/4", "4", "4", "r4", "mlflow")
    done = decide.follow_job(again.status, JobState("gate-retrain-1", JobOutcome.SUCCEEDED, T0, result=JobResult(model=model)),
                             T0 + datetime.timedelta(minutes=7))
    assert done.status.last_retrain.outcome == "Succeeded" and done.status.last_retrain.result_error is None
    assert [e.reason for e in done.events] == ["RetrainSucceeded", "RetrainResult"]


def test_looks_count_per_version_as_the_budget_levels_them_even_from_an_unknown_version():
    """A canary judged before the ModelDeployment's status names its version (None), then as "2":
    the first look at "2" gets the first look's level, so it must count as the first look."""
    from modelwarden.planning.budget import evaluation_level

    unknown = decide.PolicyContext(**{**ctx().__dict__, "alert": AlertContext(policy="gate", namespace="ml", modeldeployment="fraud",
                                                                           model="fraud", track="canary", version=None)})
    known = ctx()
    status = DriftPolicyStatus()
    for context, expected_looks in ((unknown, 1), (unknown, 2), (known, 1), (known, 2), (unknown, 1)):
        level = evaluation_level(context.spec, status, context.alert.version)
        assert level == evaluation_level(context.spec, DriftPolicyStatus(looks=expected_looks - 1, evaluated_version=context.alert.version),
                                         context.alert.version)
        status = decide.observe(context, status, evaluation(P, T0), T0).status
        assert status.looks == expected_looks and status.evaluated_version == context.alert.version
