"""Day-2 requests (kubectl modelwarden promote/abort/approve/pause/resume) as plan() takes them:
each new annotation value acted on once and acknowledged in status; a failing gate still wins."""

from tests.unit.test_plan import ALL_READY, BASE, MIN, T0, applied, condition, md, ready, reasons, step, verdict

GATE_PASSED = verdict(at=T0 + 5 * MIN)


def asking(model, **annotations):
    """The same object with these annotations set (what `kubectl modelwarden ...` writes)."""
    keys = {"promote": "modelwarden.io/promote", "promote_full": "modelwarden.io/promote-full", "abort": "modelwarden.io/abort",
            "approve": "modelwarden.io/approve", "paused": "modelwarden.io/paused"}
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
    assert approve.status["requests"] == {"approve": "x"}
    assert [e.message for e in approve.events if e.reason == "RequestIgnored"] == [
        "approve (modelwarden.io/approve=x) ignored: the current step does not require approval"]
    stable_only, _ = step(asking(md(canary=None), promote="y", abort="z"), {"stable": ready("7", 3)})
    assert stable_only.status["requests"] == {"promote": "y", "abort": "z"}
    assert sorted(e.message.split(" ignored: ")[1] for e in stable_only.events if e.reason == "RequestIgnored") == [
        "no canary in progress"] * 2
