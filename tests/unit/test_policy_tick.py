"""planning.tick: what a DriftPolicy tick reads (needs) and the one decision it makes (decide_tick)."""

from __future__ import annotations

import datetime

from modelwarden.api.driftpolicy import DriftPolicyStatus, RetrainStatus, Verdict
from modelwarden.builders.jobs import retrain_job
from modelwarden.planning import policy, tick
from modelwarden.planning.retraining import JobOutcome, JobState
from tests.unit.test_policy_decisions import T0, ctx, evaluation

F, P = Verdict.FAIL, Verdict.PASS
MINUTE = datetime.timedelta(minutes=1)


def ticks(context, verdicts, status=None):
    """Run one tick per verdict, a minute apart, each with a due evaluation; returns the decisions."""
    status = status or DriftPolicyStatus()
    decisions = []
    for i, verdict in enumerate(verdicts):
        now = T0 + i * MINUTE
        decision = tick.decide_tick(context, status, tick.Observations(target_found=True, evaluation=evaluation(verdict, now)), now)
        decisions.append(decision)
        status = decision.status
    return decisions


def job_of(context, decision):
    """The Job the decided run becomes with the Job backend (retrainers/job.py builds it so)."""
    run = decision.run
    return None if run is None else retrain_job(run.owner, context.spec.actions.retrain.job_template, run.name, run.trigger, run.context)


def test_needs_an_evaluation_only_when_due_and_the_target_exists():
    context = ctx()
    due = policy.next_evaluation(context, DriftPolicyStatus(), T0)
    assert T0 <= due <= T0 + policy.FIRST_EVALUATION_SPREAD
    assert tick.needs(context, DriftPolicyStatus(), (), True, due) == tick.Needs(job=None, evaluation=due)
    assert tick.needs(context, DriftPolicyStatus(), (), True, due - datetime.timedelta(microseconds=1)).evaluation is None
    assert tick.needs(context, DriftPolicyStatus(), (), False, due).evaluation is None
    assert tick.needs(ctx(suspend=True), DriftPolicyStatus(), (), True, due).evaluation is None
    decided = tick.decide_tick(context, DriftPolicyStatus(), tick.Observations(target_found=True, evaluation=evaluation(P, due)), due)
    evaluated, following = decided.status, decided.next_at
    assert tick.needs(context, evaluated, (), True, following - datetime.timedelta(microseconds=1)).evaluation is None
    # Run a little late (a busy worker pool): the evaluation still judges its due instant, the one
    # every policy of the cohort judges; run later than the tolerance (15 s here): it judges now.
    assert tick.needs(context, evaluated, (), True, following + datetime.timedelta(seconds=3)).evaluation == following
    late = following + datetime.timedelta(seconds=16)
    assert tick.needs(context, evaluated, (), True, late).evaluation == late


def test_needs_the_running_job_also_when_status_lost_its_record():
    running = DriftPolicyStatus(last_retrain=RetrainStatus(job_name="gate-retrain-1", started_at=T0, trigger="Breach"))
    assert tick.needs(ctx(), running, (), True, T0).job == "gate-retrain-1"
    unrecorded = JobState("gate-retrain-2", JobOutcome.RUNNING, started_at=T0, trigger="breach")
    assert tick.needs(ctx(), DriftPolicyStatus(), (unrecorded,), True, T0).job == "gate-retrain-2"
    finished = running.model_copy(update={"last_retrain": running.last_retrain.model_copy(update={"outcome": "Succeeded"})})
    assert tick.needs(ctx(), finished, (), True, T0).job is None


def test_a_breach_decides_rollback_and_one_job_with_its_body_in_one_tick():
    template = {"template": {"spec": {"containers": [{"name": "train", "image": "trainer"}]}}}
    context = ctx(actions={"rollback": True, "retrain": {"jobTemplate": template, "cooldown": "1h"}})
    first, breach = ticks(context, [F, F])
    assert first.retrain is None and first.run is None and not first.rollback_requested
    assert breach.rollback_requested and breach.retrain is not None
    job = job_of(context, breach)
    assert job["metadata"]["name"] == breach.retrain.job_name == breach.status.last_retrain.job_name
    assert job["metadata"]["labels"]["modelwarden.io/trigger"] == "breach"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELWARDEN_TRIGGER"] == "Breach" and env["MODELWARDEN_VERSION"] == "2"
    assert env["MODELWARDEN_WINDOW_END"] == "2026-01-01T00:01:00Z"  # the window the breaching evaluation judged
    assert [e.reason for e in breach.events] == ["RollbackRequested", "RetrainLaunched"]
    assert breach.notification is not None and breach.notification.reason == "DriftDetected"


def test_a_refused_job_is_not_recorded_and_the_next_tick_asks_again():
    breach = ticks(ctx(), [F, F])[-1]
    failed = breach.launch_failed("ApiException: 403 Forbidden")
    assert failed.run is None and failed.retrain is None and failed.status.last_retrain is None
    assert [e.reason for e in failed.events] == ["RollbackRequested", "RetrainFailed"]
    assert failed.notification == breach.notification  # the alert still goes out
    again = ticks(ctx(), [F], failed.status)[-1]
    assert again.retrain is not None and again.retrain.job_name == breach.retrain.job_name  # same breach, same name


def test_a_finished_job_and_a_manual_trigger_in_the_same_tick():
    running = DriftPolicyStatus(last_retrain=RetrainStatus(job_name="gate-retrain-1", started_at=T0, trigger="Breach"))
    done = JobState("gate-retrain-1", JobOutcome.SUCCEEDED, T0 + MINUTE)
    decision = tick.decide_tick(ctx(), running, tick.Observations(target_found=True, job=done, retrain_token="t1"), T0 + 2 * MINUTE)
    assert decision.finished == JobOutcome.SUCCEEDED
    assert [e.reason for e in decision.events] == ["RetrainSucceeded", "RetrainResultInvalid", "RetrainLaunched"]
    assert decision.status.retrain_token == "t1" and job_of(ctx(), decision)["metadata"]["labels"]["modelwarden.io/trigger"] == "manual"


def test_suspended_and_missing_target_never_act():
    token = tick.Observations(target_found=True, retrain_token="t1")
    paused = tick.decide_tick(ctx(suspend=True), DriftPolicyStatus(), token, T0)
    assert paused.status.phase.value == "Suspended" and paused.run is None and paused.retrain is None
    missing = tick.decide_tick(ctx(), DriftPolicyStatus(), tick.Observations(target_found=False), T0)
    assert missing.status.phase.value == "Error" and [e.reason for e in missing.events] == ["EvaluationError"]
    assert paused.next_at is None and missing.next_at is None  # nothing will be evaluated: no due time to wake for


def test_the_schedule_cronjob_is_wanted_kept_or_deleted():
    template = {"template": {"spec": {"containers": [{"name": "train", "image": "trainer"}]}}}
    scheduled = ctx(actions={"retrain": {"jobTemplate": template, "schedule": "0 3 * * *"}})
    wanted = tick.decide_tick(scheduled, DriftPolicyStatus(), tick.Observations(target_found=True), T0)
    assert wanted.cronjob["spec"]["schedule"] == "0 3 * * *" and wanted.delete_cronjob is None
    kept = tick.decide_tick(scheduled, DriftPolicyStatus(), tick.Observations(target_found=False, cronjob="gate-retrain"), T0)
    assert kept.cronjob is None and kept.delete_cronjob is None  # the target is away: what runs is left alone
    gone = tick.decide_tick(ctx(), DriftPolicyStatus(), tick.Observations(target_found=True, cronjob="gate-retrain"), T0)
    assert gone.cronjob is None and gone.delete_cronjob == "gate-retrain"


def test_an_evaluation_run_late_says_so_and_one_on_time_clears_it():
    context = ctx()  # interval 1m: tolerance 15s
    due = policy.next_evaluation(context, DriftPolicyStatus(), T0)
    first = tick.decide_tick(context, DriftPolicyStatus(), tick.Observations(target_found=True, evaluation=evaluation(P, due)), due)
    grid = first.next_at  # on the cohort's grid from here on
    assert "EvaluationLagging" not in [c.type for c in first.status.conditions]
    late_at = grid + datetime.timedelta(seconds=80)  # 80 s late, so it judges `now`
    late = tick.decide_tick(context, first.status, tick.Observations(target_found=True, evaluation=evaluation(P, late_at)), late_at)
    lagging = next(c for c in late.status.conditions if c.type == "EvaluationLagging")
    assert lagging.status.value == "True" and "80.0s after it was due" in lagging.message
    assert late.next_at == grid + 2 * MINUTE  # back on the grid, at least half an interval later
    on_time_at = grid + 2 * MINUTE + datetime.timedelta(seconds=5)
    on_time = tick.decide_tick(context, late.status, tick.Observations(target_found=True, evaluation=evaluation(P, grid + 2 * MINUTE)),
                               on_time_at)
    assert next(c for c in on_time.status.conditions if c.type == "EvaluationLagging").status.value == "False"
    assert on_time.next_at == grid + 3 * MINUTE


def test_a_short_interval_never_judges_evidence_older_than_half_an_interval():
    context = ctx(interval="2s", window="2s")  # lag tolerance 10 s, but half the interval is 1 s
    due = policy.next_evaluation(context, DriftPolicyStatus(), T0)
    assert tick.needs(context, DriftPolicyStatus(), (), True, due + datetime.timedelta(milliseconds=900)).evaluation == due
    late = due + datetime.timedelta(milliseconds=1500)
    assert tick.needs(context, DriftPolicyStatus(), (), True, late).evaluation == late


def test_evaluate_now_judges_at_once_and_once_per_value():
    context = ctx()
    evaluated = tick.decide_tick(context, DriftPolicyStatus(), tick.Observations(target_found=True, evaluation=evaluation(P, T0)), T0)
    status, between = evaluated.status, T0 + 10 * datetime.timedelta(seconds=1)  # the next one is a minute away
    assert tick.needs(context, status, (), True, between).evaluation is None
    assert tick.needs(context, status, (), True, between, evaluate_token="now-1").evaluation == between
    asked = tick.decide_tick(context, status, tick.Observations(target_found=True, evaluation=evaluation(F, between),
                                                                evaluate_token="now-1"), between)
    assert asked.status.evaluate_token == "now-1" and asked.status.consecutive_failures == 1
    assert [e.message for e in asked.events if e.reason == "EvaluationRequested"] == [
        "modelwarden.io/evaluate-now=now-1: evaluated at once (Fail)"]
    assert tick.needs(context, asked.status, (), True, between, evaluate_token="now-1").evaluation is None  # acted on
    suspended = tick.decide_tick(ctx(suspend=True), status, tick.Observations(target_found=True, evaluate_token="now-2"), between)
    assert suspended.status.evaluate_token == "now-2"
    assert [e.reason for e in suspended.events if "evaluate-now" in e.message] == ["RequestIgnored"]
