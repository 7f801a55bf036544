"""plan() decides on fresh evidence only: step clocks start when weights are seen applied, a Pass
counts only over a window after the step (and after the last Fail), conditions speak of the
current canary, stalls are reported, HPAs keep their replicas. Plus the write fence."""

import datetime

from modelwarden.kube.fence import WriteFence
from modelwarden.planning.types import PolicyVerdict
from tests.unit.test_plan import ALL_READY, BASE, MIN, T0, applied, condition, md, ready, reasons, step

WINDOW = 5 * MIN


def gate(result="Pass", at=T0, failures=0, recent=(), threshold=3, window=WINDOW):
    return PolicyVerdict(name="gate", track="canary", verdict=result, evaluated_at=at, consecutive_failures=failures,
                         failure_threshold=threshold, rollback=True, window=window, recent=tuple(recent),
                         failing_checks=("drift/age",) if result == "Fail" else ())


def test_the_step_clock_starts_when_the_weights_are_seen_applied():
    result, current = step(md())
    assert result.status["canaryStep"] == 0 and "stepStartedAt" not in result.status
    assert "waiting for the weights to be applied" in condition(result.status, "Progressing")["message"]
    # Nothing applied yet: no clock, so no evidence can count and the step holds however long.
    held, current = step(current, ALL_READY, [gate(at=T0 + 30 * MIN)], now=T0 + 40 * MIN, routes=[])
    assert held.status["canaryStep"] == 0 and "stepStartedAt" not in held.status
    # A route still showing other weights is not this step's route.
    wrong = [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "fraud"},
              "spec": {"http": [{"route": [{"destination": {"host": "fraud-stable"}, "weight": 100}]}]}}]
    assert "stepStartedAt" not in step(current, ALL_READY, now=T0 + 41 * MIN, routes=wrong)[0].status
    started, _ = step(current, ALL_READY, now=T0 + 42 * MIN)
    assert started.status["stepStartedAt"] == "2026-01-01T00:42:00Z"


def test_a_pass_counts_only_over_a_window_after_the_step_and_after_the_last_fail():
    _, current = step(md())
    current = applied(current)  # the step starts at T0
    overlapping = gate(at=T0 + 4 * MIN)  # its window [T0-1m, T0+4m] holds the previous step's traffic
    assert step(current, ALL_READY, [overlapping], now=T0 + 11 * MIN)[0].status["canaryStep"] == 0
    fresh = gate(at=T0 + 6 * MIN)
    assert step(current, ALL_READY, [fresh], now=T0 + 11 * MIN)[0].status["canaryStep"] == 1
    # A Fail during the step (below the threshold) voids every Pass whose window reaches back before it.
    after_fail = gate(at=T0 + 10 * MIN, recent=[(T0 + 6 * MIN, "Fail"), (T0 + 10 * MIN, "Pass")])
    assert step(current, ALL_READY, [after_fail], now=T0 + 11 * MIN)[0].status["canaryStep"] == 0
    clean = gate(at=T0 + 12 * MIN, recent=[(T0 + 6 * MIN, "Fail"), (T0 + 10 * MIN, "Pass"), (T0 + 12 * MIN, "Pass")])
    assert step(current, ALL_READY, [clean], now=T0 + 12 * MIN)[0].status["canaryStep"] == 1


def test_a_breach_before_the_canary_restarted_never_aborts_the_restart():
    _, current = step(md())
    breach = gate("Fail", at=T0 + MIN, failures=3, recent=[(T0 + MIN - 2 * MIN // 2, "Fail")] * 3)
    result, aborted = step(current, ALL_READY, [breach], now=T0 + 2 * MIN)
    assert "CanaryAborted" in reasons(result)
    retried = md(status=aborted.status.to_wire())
    retried.metadata["annotations"] = {"modelwarden.io/retry": "1"}
    result, restarted = step(retried, ALL_READY, [breach], now=T0 + 3 * MIN)
    assert "CanaryAborted" not in reasons(result) and result.status["phase"] == "Progressing"
    # Failing evaluations made after the restart do abort it, on the first plan that sees them.
    streak = [(T0 + 4 * MIN, "Fail"), (T0 + 5 * MIN, "Fail"), (T0 + 6 * MIN, "Fail")]
    again = gate("Fail", at=T0 + 6 * MIN, failures=3, recent=streak)
    assert "CanaryAborted" in reasons(step(restarted, ALL_READY, [again], now=T0 + 6 * MIN)[0])
    mixed = gate("Fail", at=T0 + 6 * MIN, failures=3, recent=[(T0 + 2 * MIN, "Fail"), *streak[1:]])
    assert "CanaryAborted" not in reasons(step(restarted, ALL_READY, [mixed], now=T0 + 6 * MIN)[0])


def test_promoted_speaks_of_the_current_canary():
    _, current = step(md())
    _, current = step(applied(current), ALL_READY, [gate(at=T0 + 6 * MIN)], now=T0 + 11 * MIN)
    _, promoted = step(applied(current, now=T0 + 11 * MIN), ALL_READY, [gate(at=T0 + 17 * MIN)], now=T0 + 22 * MIN)
    assert promoted.status.stable.version == "8"
    assert condition(promoted.status.to_wire(), "Promoted")["status"] == "True"
    nine = md(status=promoted.status.to_wire(), canary={**BASE["spec"]["canary"], "version": "9", "modelUri": "s3://models/9"})
    nine.metadata["generation"] = 2
    result, _ = step(nine, {"stable": ready("8", 3)}, now=T0 + 23 * MIN)
    promoted_condition = condition(result.status, "Promoted")
    assert promoted_condition["status"] == "False" and promoted_condition["message"] == "canary 9 not promoted"
    assert {c["observedGeneration"] for c in result.status["conditions"]} == {2}


def test_a_step_without_decisive_verdicts_stalls_once_and_aborts_when_asked():
    canary = {**BASE["spec"]["canary"], "progressDeadline": "20m"}
    _, current = step(md(canary=canary))
    current = applied(current)
    undecided = [gate("InsufficientData", at=T0 + 25 * MIN)]
    result, _ = step(current, ALL_READY, undecided, now=T0 + 29 * MIN)
    assert condition(result.status, "Stalled")["status"] == "False"
    result, stalled = step(current, ALL_READY, undecided, now=T0 + 30 * MIN)  # pause 10m + deadline 20m
    assert condition(result.status, "Stalled")["status"] == "True" and reasons(result) == ["CanaryStalled"]
    assert result.status["phase"] == "Progressing"
    assert step(stalled, ALL_READY, undecided, now=T0 + 31 * MIN)[0].events == []  # announced once
    aborting = md(status=current.status.to_wire(), canary={**canary, "abortOnStall": True})
    result, _ = step(aborting, ALL_READY, undecided, now=T0 + 30 * MIN)
    assert result.status["phase"] == "RolledBack" and "stalled" in result.status["rollback"]["reason"]


def test_an_autoscaled_track_keeps_the_replicas_its_hpa_gives_it():
    model = md(traffic={"router": "replicas"}, stable={"version": "7", "modelUri": "s3://models/7", "replicas": 3})
    result, _ = step(model)
    deployments = {c["metadata"]["name"]: c["spec"] for c in result.children if c["kind"] == "Deployment"}
    assert deployments["fraud-stable"]["replicas"] == 2 and deployments["fraud-canary"]["replicas"] == 1
    from modelwarden.planning.plan import plan

    scaled = plan(model, {"stable": ready("7", 9)}, [], T0, autoscaled={"stable": 9})
    deployments = {c["metadata"]["name"]: c["spec"] for c in scaled.children if c["kind"] == "Deployment"}
    assert "replicas" not in deployments["fraud-stable"]  # the HPA's to set
    assert deployments["fraud-canary"]["replicas"] == 1
    assert scaled.status["weights"]["canary"] == 10  # 1 canary pod beside 9 stable pods: what users really get
    assert "HorizontalPodAutoscaler" in condition(scaled.status, "TrafficReady")["message"]


def test_the_write_fence_calls_views_older_than_our_last_write_stale():
    fence = WriteFence()
    assert not fence.is_stale("uid", "10")  # nothing written yet
    fence.record("uid", "12")
    assert fence.is_stale("uid", "11") and not fence.is_stale("uid", "12") and not fence.is_stale("uid", "13")
    fence.record("uid", "9")  # an older write reported late never moves the fence back
    assert fence.is_stale("uid", "11")
    assert not fence.is_stale("other", "1") and not fence.is_stale("uid", "opaque-version")
    fence.forget("uid")
    assert not fence.is_stale("uid", "11")


def test_verdict_windows_and_history_come_from_the_policy():
    from modelwarden.controller.modeldeployments import verdict_from_policy

    status = {"lastEvaluation": {"time": "2026-01-01T00:10:00Z", "verdict": "Pass", "results": []},
              "evaluations": [{"time": "2026-01-01T00:09:00Z", "verdict": "Fail"}, {"time": "2026-01-01T00:10:00Z", "verdict": "Pass"}]}
    spec = {"targetRef": {"name": "fraud"}, "track": "canary", "window": "2m", "performance": [{"metric": "accuracy", "min": 0.8}]}
    verdict = verdict_from_policy("gate", spec, status)
    assert verdict.window == datetime.timedelta(minutes=2) and verdict.last_failure() == T0 + 9 * MIN
    assert not verdict.passed_since(T0)  # the Fail at 00:09 lies inside the Pass's window
    assert verdict.failure_threshold == 3 and verdict.verdict == "Pass"  # the typed model's default, not a second one
    unreadable = verdict_from_policy("gate", {**spec, "window": "soon"}, status)
    assert unreadable.verdict == "Error" and not unreadable.passed_since(None) and not unreadable.breached
