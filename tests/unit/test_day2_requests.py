"""Day-2 requests (kubectl modelwarden promote/abort/approve/pause/resume) as plan() takes them:
each new annotation value acted on once and acknowledged in status; a failing gate still wins."""

from tests.unit.test_plan import ALL_READY, BASE, MIN, T0, applied, condition, md, ready, reasons, step, verdict

GATE_PASSED = verdict(at=T0 + 5 * MIN)


def asking(model, **annotations):
    """The same object with these annotations set (what `kubectl modelwarden ...` writes)."""
    keys = {"promote": "modelwarden.io/promote", "promote_full": "modelwarden.io/promote-full", "abort": "modelwarden.io/abort",
            "approve": "modelwarden.io/approve", "paused": "modelwarden.io/paused", "retry": "modelwarden.io/retry"}
    model = model.model_copy(deep=True)
    model.metadata["annotations"] = {**(model.metadata.get("annotations") or {}), **{keys[k]: v for k, v in annotations.items()}}
    return model


def started():
    return applied(step(md())[1])  # canary 8 at step 1/2 (10%), its clock started at T0


def test_promote_declares_the_step_done_once():
    result, after = step(asking(started(), promote="t1"), ALL_READY, now=T0 + MIN)  # pause not over, no gate yet
    assert result.status["canaryStep"] == 1 and result.status["requests"] == {"promote": "t1"}
    assert [e.message for e in result.events if e.reason == "CanaryStepAdvanced"] == [
        "canary 8 advanced to step 2/2 at 50% on request (modelwarden.io/promote=t1)"]
    again, _ = step(applied(after, now=T0 + 2 * MIN), ALL_READY, now=T0 + 3 * MIN)  # the same value: nothing more
    assert again.status["canaryStep"] == 1 and "CanaryPromoted" not in reasons(again)


def test_promote_full_and_abort_act_at_once():
    promoted, _ = step(asking(started(), promote_full="p"), ALL_READY, now=T0 + MIN)
    assert promoted.status["stable"]["version"] == "8" and promoted.status["history"][-1]["reason"] == "Promoted"
    assert "on request (modelwarden.io/promote-full=p)" in next(e.message for e in promoted.events if e.reason == "CanaryPromoted")
    aborted, _ = step(asking(started(), abort="a"), ALL_READY, [GATE_PASSED], now=T0 + 11 * MIN)
    assert aborted.status["phase"] == "RolledBack" and aborted.status["stable"]["version"] == "7"
    assert aborted.status["rollback"]["reason"] == "aborted on request (modelwarden.io/abort=a)"
    assert aborted.status["requests"] == {"abort": "a"}


def test_pause_holds_the_steps_but_not_a_failing_gate():
    paused = asking(started(), paused="true")
    held, after = step(paused, ALL_READY, [GATE_PASSED], now=T0 + 11 * MIN)  # would advance unpaused
    assert held.status["canaryStep"] == 0 and held.status["phase"] == "Paused" and held.status["paused"] is True
    assert condition(held.status, "Paused")["reason"] == "PauseRequested" and reasons(held) == ["CanaryPaused"]
    late, _ = step(asking(after, paused="true"), ALL_READY, [GATE_PASSED], now=T0 + 3 * 60 * MIN)  # long past the deadline
    assert condition(late.status, "Stalled")["status"] == "False" and late.status["canaryStep"] == 0
    breach = verdict(result="Fail", at=T0 + 12 * MIN, failures=3)
    assert step(asking(after, paused="true"), ALL_READY, [breach], now=T0 + 13 * MIN)[0].status["phase"] == "RolledBack"
    unpaused = after.model_copy(deep=True)
    del unpaused.metadata["annotations"]["modelwarden.io/paused"]  # kubectl modelwarden resume
    resumed, _ = step(unpaused, ALL_READY, [verdict(at=T0 + 12 * MIN)], now=T0 + 13 * MIN)
    assert resumed.status["canaryStep"] == 1 and "paused" not in resumed.status
    assert reasons(resumed)[:2] == ["CanaryResumed", "CanaryStepAdvanced"]


def test_a_step_requiring_approval_waits_for_it_and_each_step_needs_its_own():
    steps = [{"weight": 10, "pause": "10m", "approval": "required"}, {"weight": 50, "pause": "10m", "approval": "required"}]
    current = applied(step(md(canary={**BASE["spec"]["canary"], "steps": steps}))[1])
    early, _ = step(current, ALL_READY, [GATE_PASSED], now=T0 + 5 * MIN)
    assert early.status["phase"] == "Progressing"  # still in its pause: waiting for no one yet
    waiting, _ = step(current, ALL_READY, [GATE_PASSED], now=T0 + 11 * MIN)
    assert waiting.status["canaryStep"] == 0 and waiting.status["phase"] == "Paused"
    assert condition(waiting.status, "Paused")["reason"] == "AwaitingApproval" and "step 1/2" in waiting.status["message"]
    approved, after = step(asking(current, approve="ok1"), ALL_READY, [GATE_PASSED], now=T0 + 11 * MIN)
    assert approved.status["canaryStep"] == 1 and reasons(approved)[:2] == ["StepApproved", "CanaryStepAdvanced"]
    after = applied(after, now=T0 + 11 * MIN)
    second, _ = step(asking(after, approve="ok1"), ALL_READY, [verdict(at=T0 + 17 * MIN)], now=T0 + 22 * MIN)
    assert second.status["canaryStep"] == 1 and second.status["phase"] == "Paused"  # the old approval was step 1's
    done, _ = step(asking(after, approve="ok2"), ALL_READY, [verdict(at=T0 + 17 * MIN)], now=T0 + 22 * MIN)
    assert done.status["stable"]["version"] == "8"


def test_a_request_nothing_can_act_on_is_acknowledged_and_said_so():
    approve, _ = step(asking(started(), approve="x"), ALL_READY, now=T0 + MIN)
    assert approve.status["requests"] == {"approve": "x", "ignored": "modelwarden.io/approve=x: the current step does not require approval"}
    assert [e.message for e in approve.events if e.reason == "RequestIgnored"] == [
        "approve (modelwarden.io/approve=x) ignored: the current step does not require approval"]
    stable_only, _ = step(asking(md(canary=None), promote="y", abort="z"), {"stable": ready("7", 3)})
    assert {k: v for k, v in stable_only.status["requests"].items() if k != "ignored"} == {"promote": "y", "abort": "z"}
    assert sorted(e.message.split(" ignored: ")[1] for e in stable_only.events if e.reason == "RequestIgnored") == [
        "no canary in progress"] * 2
    assert stable_only.status["requests"]["ignored"] == ("modelwarden.io/promote=y: no canary in progress; "
                                                         "modelwarden.io/abort=z: no canary in progress")  # each one, for its asker


def test_time_paused_never_counts_as_a_stalled_step():
    canary = {**BASE["spec"]["canary"], "progressDeadline": "20m", "abortOnStall": True}
    current = applied(step(md(canary=canary))[1])
    _, paused = step(asking(current, paused="true"), ALL_READY, now=T0 + MIN)
    _, still = step(paused, ALL_READY, [verdict(result="InsufficientData", at=T0 + 100 * MIN)], now=T0 + 120 * MIN)
    resumed_model = still.model_copy(deep=True)
    del resumed_model.metadata["annotations"]["modelwarden.io/paused"]
    resumed, after = step(resumed_model, ALL_READY, [verdict(result="InsufficientData", at=T0 + 120 * MIN)], now=T0 + 121 * MIN)
    assert resumed.status["phase"] == "Progressing" and reasons(resumed) == ["CanaryResumed"]  # the deadline starts over
    late, _ = step(after, ALL_READY, [verdict(result="InsufficientData", at=T0 + 150 * MIN)], now=T0 + 151 * MIN)
    assert late.status["phase"] == "RolledBack"  # 10m pause + 20m deadline after the resume


def test_a_paused_ab_split_is_not_promoted_by_its_winner():
    split = md(canary={"version": "8", "modelUri": "s3://models/8", "weight": 20, "autoPromoteWinner": True})
    _, current = step(asking(split, paused="true"), ALL_READY)
    won = verdict(at=T0 + 10 * MIN)
    won = won.__class__(**{**won.__dict__, "version": "8", "winner": "canary", "winner_baseline": "stable",
                           "winner_evidence_from": T0 + MIN, "window": 5 * MIN, "recent": ((T0 + 10 * MIN, "Pass"),)})
    assert step(current, ALL_READY, [won], now=T0 + 11 * MIN)[0].status["stable"]["version"] == "7"


def test_retrying_a_reverted_stable_serves_the_specs_stable_again_on_fresh_evidence():
    from tests.unit.test_gitops_conditions import revert_stable

    _, reverted, breach = revert_stable()
    assert reverted.status.stable.version == "7"
    retried, after = step(asking(reverted, retry="r"), {"stable": ready("7", 3)}, [breach], now=T0 + 4 * MIN)
    assert retried.status["stable"]["version"] == "9" and "rollback" not in retried.status  # the old breach is not fresh
    assert reasons(retried)[:2] == ["RetryRequested", "StableUpdated"] and retried.status["requests"]["retry"] == "r"
    assert [c["status"] for c in retried.status["conditions"] if c["type"] == "Stalled"] == ["False"]
    fresh = verdict(track="stable", result="Fail", at=T0 + 5 * MIN, failures=3, version="9")
    assert step(after, {"stable": ready("9", 3)}, [fresh], now=T0 + 6 * MIN)[0].status["stable"]["version"] == "7"


def test_a_retry_with_nothing_rolled_back_says_so():
    result, _ = step(asking(started(), retry="r"), ALL_READY, now=T0 + MIN)
    assert result.status["requests"]["ignored"] == "modelwarden.io/retry=r: nothing is rolled back"
    assert reasons(result) == ["RequestIgnored"]
