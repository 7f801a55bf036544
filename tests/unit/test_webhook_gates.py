"""Webhook gates as plan() decides them: a rollout gate keeps the canary at 0% until a 2xx given
after it began to wait; confirm-promotion holds the last step; holdTimeout rolls back; a passed
gate is never asked again; a new version asks again. Pure."""

import datetime

from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.planning.plan import plan
from modelwarden.planning.webhookgates import GateAnswer, context, waiting
from tests.unit.test_day2_requests import asking
from tests.unit.test_plan import ALL_READY, BASE, MIN, T0, applied_route, condition, md, reasons, verdict

SECOND = datetime.timedelta(seconds=1)


def gated(*gates, steps=None):
    webhooks = [{"name": name, "type": kind, "url": "https://ci.example.com/gate", **extra} for name, kind, extra in gates]
    return md(canary={**BASE["spec"]["canary"], "steps": steps or BASE["spec"]["canary"]["steps"], "webhooks": webhooks})


def run(model, answers=(), now=T0, observed=ALL_READY, verdicts=(), routes=None):
    result = plan(model, observed, list(verdicts), now, routes=applied_route(model) if routes is None else routes,
                  gate_answers={a.name: a for a in answers})
    return result, ModelDeployment.model_validate({**BASE, "metadata": model.metadata, "spec": model.spec.to_wire(),
                                                   "status": result.status})


def said(name, code, at, version="8"):
    return GateAnswer(name=name, version=version, at=at, code=code, message=f"HTTP {code}" if code else "no answer within 10s")


def test_a_rollout_gate_keeps_the_canary_at_zero_until_a_fresh_2xx():
    model = gated(("confirm", "confirm-rollout", {}))
    first, current = run(model)
    assert first.status["weights"]["canary"] == 0 and first.status["phase"] == "Paused"
    assert condition(first.status, "Paused")["reason"] == "AwaitingWebhook"
    assert [g.name for g in waiting(current, current.status)] == ["confirm"]
    stale, _ = run(current, [said("confirm", 200, T0 - SECOND)], now=T0 + SECOND)  # from before it began to wait
    assert stale.status["weights"]["canary"] == 0
    refused, current = run(current, [said("confirm", 403, T0 + SECOND)], now=T0 + 2 * SECOND)
    assert refused.status["weights"]["canary"] == 0 and refused.status["gates"][0]["lastCode"] == 403
    assert "stepStartedAt" not in refused.status  # no step clock while held
    passed, current = run(current, [said("confirm", 200, T0 + 3 * SECOND)], now=T0 + 4 * SECOND)
    assert passed.status["weights"]["canary"] == 10 and reasons(passed).count("GatePassed") == 1
    assert passed.status["stepRequestedAt"] == "2026-01-01T00:00:04Z"  # the step (and its deadline) starts now
    assert waiting(current, current.status) == []  # never asked again
    again, _ = run(current, [], now=T0 + 5 * SECOND)
    assert again.status["weights"]["canary"] == 10 and reasons(again) == []


def test_pre_rollout_waits_from_when_the_canary_is_ready():
    model = gated(("smoke", "pre-rollout", {"holdTimeout": "10m"}))
    _, current = run(model, observed={"stable": ALL_READY["stable"]})  # the canary's model still downloading
    assert waiting(current, current.status) == [] and "waitingSince" not in current.status.to_wire()["gates"][0]
    late, current = run(current, observed={"stable": ALL_READY["stable"]}, now=T0 + 20 * MIN)
    assert late.status["phase"] == "Paused" and "waiting for the canary's pods" in late.status["message"]  # no timeout yet
    ready, current = run(current, now=T0 + 21 * MIN)
    assert [g.name for g in waiting(current, current.status)] == ["smoke"] and ready.status["gates"][0]["waitingSince"]
    passed, _ = run(current, [said("smoke", 200, T0 + 22 * MIN)], now=T0 + 22 * MIN)
    assert passed.status["weights"]["canary"] == 10


def test_confirm_promotion_holds_the_last_step():
    model = gated(("promotion", "confirm-promotion", {}), steps=[{"weight": 10, "pause": "10m"}])
    _, current = run(model)
    _, current = run(current, now=T0)  # weights seen applied: the step clock starts at T0
    due, current = run(current, verdicts=[verdict(at=T0 + 5 * MIN)], now=T0 + 11 * MIN)
    assert due.status["stable"]["version"] == "7" and due.status["phase"] == "Paused"
    assert due.status["gates"][0]["type"] == "confirm-promotion"
    promoted, _ = run(current, [said("promotion", 204, T0 + 12 * MIN)], verdicts=[verdict(at=T0 + 5 * MIN)], now=T0 + 12 * MIN)
    assert promoted.status["stable"]["version"] == "8" and reasons(promoted)[:2] == ["GatePassed", "CanaryPromoted"]


def test_a_gate_holding_past_its_hold_timeout_rolls_the_canary_back():
    _, current = run(gated(("confirm", "confirm-rollout", {"holdTimeout": "10m"})))
    held, current = run(current, [said("confirm", None, T0 + MIN)], now=T0 + 9 * MIN)
    assert held.status["phase"] == "Paused"
    expired, _ = run(current, [said("confirm", 500, T0 + 10 * MIN)], now=T0 + 10 * MIN)
    assert expired.status["phase"] == "RolledBack"
    assert expired.status["rollback"]["reason"] == "confirm-rollout gate confirm held for 10m (last: HTTP 500)"  # its latest answer


def test_a_person_overrides_the_gates_and_a_new_version_asks_again():
    _, current = run(gated(("confirm", "confirm-rollout", {})))
    ignored, _ = run(asking(current, promote="p"), now=T0 + MIN)
    assert [e.message for e in ignored.events if e.reason == "RequestIgnored"] == [
        "promote (modelwarden.io/promote=p) ignored: a webhook gate holds the rollout (promote --full or abort override it)"]
    full, _ = run(asking(current, promote_full="f"), now=T0 + MIN)
    assert full.status["stable"]["version"] == "8"
    _, passed = run(current, [said("confirm", 200, T0 + SECOND)], now=T0 + 2 * SECOND)
    nine = md(status=passed.status.to_wire(), canary={**passed.spec.canary.to_wire(), "version": "9", "modelUri": "s3://models/9"})
    result, _ = run(nine, observed={"stable": ALL_READY["stable"]}, now=T0 + 3 * SECOND)
    assert [(g["version"], "passedAt" in g) for g in result.status["gates"]] == [("9", False)]
    assert result.status["weights"]["canary"] == 0


def test_the_context_a_gate_receives():
    _, current = run(gated(("confirm", "confirm-rollout", {"metadata": {"suite": "smoke"}})))
    body = context(current, current.status, current.spec.canary.webhooks[0])
    assert body["name"] == "fraud" and body["type"] == "confirm-rollout" and body["gate"] == "confirm"
    assert body["canary"] == {"version": "8", "modelUri": "s3://models/8"} and body["stable"]["version"] == "7"
    assert body["metadata"] == {"suite": "smoke"} and body["step"] == "1/2"


def test_a_retry_after_a_gate_rollback_asks_again_and_a_rolled_back_canary_is_asked_nothing():
    _, current = run(gated(("confirm", "confirm-rollout", {"holdTimeout": "10m"})))
    expired, current = run(current, now=T0 + 10 * MIN)
    assert expired.status["phase"] == "RolledBack" and waiting(current, current.status) == []
    retried, current = run(asking(current, retry="r1"), now=T0 + 11 * MIN)
    assert "CanaryAborted" not in reasons(retried) and retried.status["phase"] == "Paused"
    assert [(g["name"], g["waitingSince"]) for g in retried.status["gates"]] == [("confirm", "2026-01-01T00:11:00Z")]
    assert retried.status["weights"]["canary"] == 0  # asked again, not passed on the old answer


def test_a_rollout_gate_added_mid_rollout_waits_for_the_next_canary():
    _, current = run(md())
    _, current = run(current)  # the step's weights applied: 10%
    added = md(status=current.status.to_wire(), canary={**BASE["spec"]["canary"],
                                                        "webhooks": [{"name": "late", "type": "confirm-rollout", "url": "https://x.example"}]})
    result, _ = run(added, now=T0 + MIN)
    assert result.status["weights"]["canary"] == 10 and not result.status.get("gates") and result.status["phase"] == "Progressing"


def test_a_plain_promote_does_not_pass_a_holding_rollout_gate_of_an_ab_split():
    split = md(canary={"version": "8", "modelUri": "s3://models/8", "weight": 20,
                       "webhooks": [{"name": "confirm", "type": "confirm-rollout", "url": "https://x.example"}]})
    _, current = run(split)
    result, _ = run(asking(current, promote="p"), now=T0 + MIN)
    assert result.status["stable"]["version"] == "7" and result.status["weights"]["canary"] == 0
    assert "a webhook gate holds the rollout" in result.status["requests"]["ignored"]
