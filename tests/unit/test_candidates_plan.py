"""The closed loop as plan() decides it (spec.candidates): a retraining Job's result runs in shadow,
then as the canary, then is promoted with its lineage; a failing gate rejects it and records why;
an offer is taken once; the spec is never written and SpecBehind says Git is behind."""

import dataclasses

from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.contract.modeluri import Resolution
from modelwarden.planning.plan import plan
from modelwarden.planning.types import CandidateOffer
from tests.unit.test_plan import BASE, MIN, T0, condition, md, ready, reasons, verdict

CANDIDATES = {"shadow": {"policy": "shadow-gate", "duration": "10m"},
              "canary": {"steps": [{"weight": 20, "pause": "5m"}, {"weight": 60, "pause": "5m"}]},
              "autoPromote": True, "cooldown": "30m"}
OFFER = CandidateOffer(id="retrain:ml/stable-drift-retrain-1a2b3c4d", version="9", model_uri="models:/fraud/9", model_version="9",
                       run_id="r9", policy="stable-drift", job="stable-drift-retrain-1a2b3c4d", breach_id="ml/stable-drift-retrain-1a2b3c4d",
                       checks=("drift/age",), window_start=T0 - 60 * MIN, window_end=T0, parent_version="7", finished_at=T0)


def looped(**candidates):
    return md(canary=None, candidates={**CANDIDATES, **candidates})


def offering(offer=OFFER, **fields):
    """The stable DriftPolicy whose retraining Job produced `offer` (its verdict on stable: Pass)."""
    return dataclasses.replace(verdict(track="stable", name="stable-drift", at=T0 - MIN), offer=offer, **fields)


def shadow_gate(result="Pass", at=T0, version="9", failures=0):
    """The label-free gate's verdict; each evaluation looks back one minute."""
    return dataclasses.replace(verdict(track="shadow", name="shadow-gate", result=result, at=at, version=version, failures=failures),
                               window=MIN)


def canary_gate(at, version="9", result="Pass", failures=0):
    return verdict(track="canary", name="canary-gate", result=result, at=at, version=version, failures=failures)


def run(model, observed, verdicts, now, routes=()):
    result = plan(model, observed, list(verdicts), now, routes=routes)
    return result, ModelDeployment.model_validate({**BASE, "metadata": model.metadata, "spec": model.spec.to_wire(),
                                                   "status": result.status})


def route(weights):
    return [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "fraud"},
             "spec": {"http": [{"route": [{"destination": {"host": "fraud-stable"}, "weight": weights.stable},
                                          {"destination": {"host": "fraud-canary"}, "weight": weights.canary}]}]}}]


def in_shadow():
    _, current = run(looped(), {"stable": ready("7", 3)}, [], T0)
    result, current = run(current, {"stable": ready("7", 3)}, [offering()], T0 + MIN)
    return result, current


def test_an_offer_starts_in_shadow_with_its_lineage_and_the_spec_untouched():
    result, current = in_shadow()
    assert reasons(result) == ["CandidateStarted", "TrafficUpdated"]  # mirroring to it began
    candidate = result.status["candidate"]
    assert candidate["stage"] == "shadow" and candidate["version"] == "9" and candidate["id"] == OFFER.id
    assert candidate["lineage"] == {"source": "retrain", "breachId": OFFER.breach_id, "policy": "stable-drift", "checks": ["drift/age"],
                                    "job": OFFER.job, "runId": "r9", "modelVersion": "9", "windowStart": "2025-12-31T23:00:00Z",
                                    "windowEnd": "2026-01-01T00:00:00Z", "parentVersion": "7", "gates": []}
    shadow = next(c for c in result.children if c["kind"] == "Deployment" and c["metadata"]["name"] == "fraud-shadow")
    assert shadow["spec"]["template"]["metadata"]["labels"]["version"] == "9"
    env = {e["name"]: e.get("value") for e in shadow["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELWARDEN_PAIRED_MODEL_VERSION"] == "7"  # scored beside the stable's model: the agreement check
    assert result.status["weights"] == {"stable": 100, "canary": 0, "mirror": 100}
    assert current.spec == looped().spec  # nothing of the candidate is in the spec


def test_the_shadow_gate_needs_a_pass_on_evidence_from_the_stage_and_the_duration():
    _, current = in_shadow()
    observed = {"stable": ready("7", 3), "shadow": ready("9", 1)}
    before = shadow_gate(at=T0 + 5 * MIN)  # its 1m window began after the stage, but the duration is 10m
    assert run(current, observed, [before], T0 + 6 * MIN)[0].status["candidate"]["stage"] == "shadow"
    stale = shadow_gate(at=T0 + MIN)  # its window reaches back before the stage began
    assert run(current, observed, [stale], T0 + 12 * MIN)[0].status["candidate"]["stage"] == "shadow"
    other = shadow_gate(at=T0 + 11 * MIN, version="7")  # about another version
    assert run(current, observed, [other], T0 + 12 * MIN)[0].status["candidate"]["stage"] == "shadow"
    passing = dataclasses.replace(shadow_gate(at=T0 + 11 * MIN), passed_checks=("drift/prediction", "agreement/rate"))
    result, after = run(current, observed, [passing], T0 + 12 * MIN)
    assert reasons(result)[:2] == ["CandidateAdvanced", "CanaryStarted"]
    assert result.status["candidate"]["stage"] == "canary" and result.status["canary"]["version"] == "9"
    assert result.status["weights"] == {"stable": 80, "canary": 20, "mirror": 0}
    (gate,) = result.status["candidate"]["lineage"]["gates"]
    assert (gate["stage"], gate["verdict"], gate["checks"]) == ("shadow", "Pass", ["drift/prediction", "agreement/rate"])


def test_a_candidate_without_a_pass_by_the_shadow_deadline_is_rejected_and_frees_the_loop():
    _, current = in_shadow()  # the stage began at T0 + 1m; duration 10m: the default deadline is 1h
    observed = {"stable": ready("7", 3), "shadow": ready("9", 1)}
    waiting = shadow_gate(result="InsufficientData", at=T0 + 50 * MIN)
    assert run(current, observed, [waiting], T0 + 60 * MIN)[0].status["candidate"]["stage"] == "shadow"
    result, after = run(current, observed, [waiting], T0 + 61 * MIN)
    assert reasons(result)[0] == "CandidateRejected" and "candidate" not in result.status
    record = result.status["candidates"][-1]
    assert record["outcome"] == "Rejected" and record["reason"] == (
        "shadow gate: no Pass within the deadline 1h (DriftPolicy shadow-gate: its last verdict about it: InsufficientData)")
    assert result.status["stable"]["version"] == "7" and result.status["weights"]["mirror"] == 0
    quiet, _ = run(current, observed, [], T0 + 61 * MIN)  # no verdict at all
    assert "no verdict about it" in quiet.status["candidates"][-1]["reason"]
    # A passing gate whose window does not yet lie wholly after the stage's start (or after a late Fail) is waited for.
    late_fail = dataclasses.replace(shadow_gate(at=T0 + 61 * MIN), window=30 * MIN, recent=((T0 + 45 * MIN, "Fail"), (T0 + 61 * MIN, "Pass")))
    held, _ = run(current, observed, [late_fail], T0 + 62 * MIN)
    assert held.status["candidate"]["stage"] == "shadow" and reasons(held) == []
    failing = shadow_gate(result="Fail", at=T0 + 61 * MIN, failures=1)  # one Fail, no breach: not passing at the deadline
    assert "its last verdict about it: Fail" in run(current, observed, [failing], T0 + 62 * MIN)[0].status["candidates"][-1]["reason"]
    custom = looped(shadow={"policy": "shadow-gate", "duration": "10m", "deadline": "15m"})
    _, current = run(custom, {"stable": ready("7", 3)}, [], T0)
    _, current = run(current, {"stable": ready("7", 3)}, [offering()], T0 + MIN)
    assert "candidate" in run(current, observed, [], T0 + 15 * MIN)[0].status
    assert "candidate" not in run(current, observed, [], T0 + 16 * MIN)[0].status


def test_a_shadow_deadline_not_longer_than_the_duration_is_refused():
    import pytest
    from tests.validation import validate_custom_resource

    with pytest.raises(ValueError, match="deadline must be longer than duration"):
        looped(shadow={"policy": "shadow-gate", "duration": "10m", "deadline": "10m"})
    body = {"apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "fraud", "namespace": "ml"},
            "spec": {"model": "fraud", "stable": {"modelUri": "models:/fraud/7"}, "traffic": {"router": "istio"},
                     "candidates": {**CANDIDATES, "shadow": {"policy": "shadow-gate", "duration": "1h", "deadline": "30m"}}}}
    assert any("spec.candidates.shadow.deadline" in e for e in validate_custom_resource(body))


def to_canary():
    _, current = in_shadow()
    _, current = run(current, {"stable": ready("7", 3), "shadow": ready("9", 1)}, [shadow_gate(at=T0 + 11 * MIN)], T0 + 12 * MIN)
    return current


def test_a_breach_in_shadow_rejects_the_candidate_and_it_is_never_taken_again():
    _, current = in_shadow()
    failing = shadow_gate(result="Fail", at=T0 + 4 * MIN, failures=3)
    result, rejected = run(current, {"stable": ready("7", 3)}, [offering(), failing], T0 + 5 * MIN)
    assert reasons(result) == ["CandidateRejected", "TrafficUpdated"] and "candidate" not in result.status
    record = result.status["candidates"][-1]
    assert record["outcome"] == "Rejected" and record["id"] == OFFER.id and "shadow gate" in record["reason"]
    assert result.status["stable"]["version"] == "7" and result.status["weights"]["mirror"] == 0
    later, _ = run(rejected, {"stable": ready("7", 3)}, [offering()], T0 + 120 * MIN)  # after the cooldown: the same offer
    assert "candidate" not in later.status and reasons(later) == []


def test_the_cooldown_holds_the_next_offer():
    _, current = in_shadow()
    _, rejected = run(current, {"stable": ready("7", 3)}, [shadow_gate(result="Fail", at=T0 + 4 * MIN, failures=3)], T0 + 5 * MIN)
    newer = dataclasses.replace(OFFER, id="retrain:ml/other", version="10", model_uri="models:/fraud/10")
    assert "candidate" not in run(rejected, {"stable": ready("7", 3)}, [offering(newer)], T0 + 20 * MIN)[0].status
    taken, _ = run(rejected, {"stable": ready("7", 3)}, [offering(newer)], T0 + 36 * MIN)
    assert taken.status["candidate"]["version"] == "10"


def test_canary_steps_then_promotion_carry_the_lineage_into_stable_and_history():
    current = to_canary()
    observed = {"stable": ready("7", 3), "canary": ready("9", 1)}
    _, current = run(current, observed, [], T0 + 13 * MIN, routes=route(current.status.weights))  # step 1's clock starts
    _, current = run(current, observed, [canary_gate(T0 + 19 * MIN)], T0 + 19 * MIN)
    assert current.status.canary_step == 1
    _, current = run(current, observed, [], T0 + 20 * MIN, routes=route(current.status.weights))
    result, promoted = run(current, observed, [canary_gate(T0 + 26 * MIN)], T0 + 26 * MIN)
    assert reasons(result)[:2] == ["CanaryPromoted", "CandidatePromoted"]
    status = result.status
    assert status["stable"]["version"] == "9" and "candidate" not in status
    assert status["candidates"][-1]["outcome"] == "Promoted"
    gates = status["stable"]["lineage"]["gates"]
    assert [(g["stage"], g["policy"], g["verdict"]) for g in gates] == [("shadow", "shadow-gate", "Pass"), ("canary", "canary-gate", "Pass")]
    assert status["history"][-1]["version"] == "9" and status["history"][-1]["lineage"]["job"] == OFFER.job
    behind = condition(status, "SpecBehind")
    assert behind["status"] == "True" and "modelwarden export-spec fraud" in behind["message"]
    assert promoted.spec == looped().spec
    caught_up = md(status=promoted.status.to_wire(), canary=None, candidates=CANDIDATES,
                   stable={"version": "9", "modelUri": "models:/fraud/9", "replicas": 3})
    adopted, _ = run(caught_up, {"stable": ready("9", 3)}, [], T0 + 30 * MIN)
    assert condition(adopted.status, "SpecBehind")["status"] == "False" and "StableUpdated" not in reasons(adopted)


def test_without_auto_promote_the_last_step_waits_for_a_person():
    current = to_canary()
    manual = md(status=current.status.to_wire(), canary=None, candidates={**CANDIDATES, "autoPromote": False})
    observed = {"stable": ready("7", 3), "canary": ready("9", 1)}
    _, current = run(manual, observed, [], T0 + 13 * MIN, routes=route(manual.status.weights))
    _, current = run(current, observed, [canary_gate(T0 + 19 * MIN)], T0 + 19 * MIN)
    _, current = run(current, observed, [], T0 + 20 * MIN, routes=route(current.status.weights))
    result, _ = run(current, observed, [canary_gate(T0 + 26 * MIN)], T0 + 26 * MIN)
    assert result.status["stable"]["version"] == "7" and result.status["phase"] == "Paused"
    assert condition(result.status, "Paused")["reason"] == "AwaitingApproval"


def test_a_failing_canary_gate_rolls_the_candidate_back_and_keeps_stable():
    current = to_canary()
    failing = canary_gate(T0 + 15 * MIN, result="Fail", failures=3)
    result, _ = run(current, {"stable": ready("7", 3), "canary": ready("9", 1)}, [failing], T0 + 16 * MIN)
    assert reasons(result)[:2] == ["CanaryAborted", "CandidateRejected"]
    assert result.status["stable"]["version"] == "7" and "candidate" not in result.status
    assert result.status["candidates"][-1]["outcome"] == "Rejected" and "canary-gate" in result.status["candidates"][-1]["reason"]
    assert condition(result.status, "SpecBehind")["status"] == "False"
    rolled_back = ModelDeployment.model_validate({**BASE, "metadata": {**current.metadata, "annotations": {"modelwarden.io/retry": "r1"}},
                                                  "spec": current.spec.to_wire(), "status": result.status})
    retried, _ = run(rolled_back, {"stable": ready("7", 3)}, [failing], T0 + 17 * MIN)
    assert reasons(retried) == ["RequestIgnored"] and "candidate 9 (Rejected), which is not retried" in retried.status["requests"]["ignored"]
    assert retried.status["rollback"]["fromVersion"] == "9" and "canary" not in retried.status


def test_an_alias_that_moves_offers_each_version_once():
    model = md(canary=None, candidates={**CANDIDATES, "source": "alias", "aliasUri": "models:/fraud@challenger"})
    _, current = run(model, {"stable": ready("7", 3)}, [], T0)
    moved = {"models:/fraud@challenger": Resolution("models:/fraud@challenger", "models:/fraud/11", "11", "r11")}
    result = plan(current, {"stable": ready("7", 3)}, [], T0 + MIN, resolutions=moved)
    assert result.status["candidate"]["id"] == "alias:models:/fraud/11" and result.status["candidate"]["lineage"]["source"] == "alias"
    on_stable = {"models:/fraud@challenger": Resolution("models:/fraud@challenger", "s3://models/7", None, None)}
    assert "candidate" not in plan(current, {"stable": ready("7", 3)}, [], T0 + MIN, resolutions=on_stable).status


def test_a_gate_that_cannot_compare_bucket_edges_refuses_the_candidate_once_it_persists():
    _, current = in_shadow()
    message = "bucket edges differ between reference and current for amount"

    def erroring(looks):
        recent = tuple((T0 + (2 + i) * MIN, "Error") for i in range(looks))
        return dataclasses.replace(shadow_gate(result="Error", at=recent[-1][0]), edges_differ=(message,), recent=recent,
                                   failure_threshold=3)
    once, _ = run(current, {"stable": ready("7", 3)}, [erroring(1)], T0 + 3 * MIN)
    assert once.status["candidate"]["stage"] == "shadow"  # one look may see a series set still forming
    refused, _ = run(current, {"stable": ready("7", 3)}, [erroring(3)], T0 + 5 * MIN)
    record = refused.status["candidates"][-1]
    assert record["outcome"] == "Refused" and message in record["reason"] and "--edges-from" in record["reason"]
    assert "CandidateRefused" in reasons(refused) and refused.status["stable"]["version"] == "7"


def test_a_candidate_never_advances_or_promotes_on_time_alone():
    current = to_canary()
    observed = {"stable": ready("7", 3), "canary": ready("9", 1)}
    _, current = run(current, observed, [], T0 + 13 * MIN, routes=route(current.status.weights))
    other = canary_gate(T0 + 30 * MIN, version="8")  # a verdict about another version is no evidence
    held, _ = run(current, observed, [other], T0 + 40 * MIN)
    assert held.status["canaryStep"] == 0 and held.status["stable"]["version"] == "7"


def test_an_offer_trained_for_another_stable_is_not_taken():
    stale = dataclasses.replace(OFFER, parent_version="6")
    _, current = run(looped(), {"stable": ready("7", 3)}, [], T0)
    result, _ = run(current, {"stable": ready("7", 3)}, [offering(stale)], T0 + MIN)
    assert "candidate" not in result.status


def test_paused_takes_no_candidate_and_holds_the_shadow():
    _, current = run(looped(), {"stable": ready("7", 3)}, [], T0)
    current.metadata["annotations"] = {"modelwarden.io/paused": "true"}
    idle, _ = run(current, {"stable": ready("7", 3)}, [offering()], T0 + MIN)
    assert "candidate" not in idle.status
    _, shadowing = in_shadow()
    shadowing.metadata["annotations"] = {"modelwarden.io/paused": "true"}
    held, _ = run(shadowing, {"stable": ready("7", 3), "shadow": ready("9", 1)}, [shadow_gate(at=T0 + 11 * MIN)], T0 + 12 * MIN)
    assert held.status["candidate"]["stage"] == "shadow"


def test_a_result_no_track_can_serve_is_refused_not_a_failing_reconcile():
    bad = dataclasses.replace(OFFER, model_uri="s3://models/my model.joblib")
    _, current = run(looped(), {"stable": ready("7", 3)}, [], T0)
    result, _ = run(current, {"stable": ready("7", 3)}, [offering(bad)], T0 + MIN)
    assert result.status["candidates"][-1]["outcome"] == "Refused" and "candidate" not in result.status


def test_adopting_the_promoted_version_in_the_spec_keeps_its_lineage():
    current = to_canary()
    observed = {"stable": ready("7", 3), "canary": ready("9", 1)}
    _, current = run(current, observed, [], T0 + 13 * MIN, routes=route(current.status.weights))
    _, current = run(current, observed, [canary_gate(T0 + 19 * MIN)], T0 + 19 * MIN)
    _, current = run(current, observed, [], T0 + 20 * MIN, routes=route(current.status.weights))
    _, promoted = run(current, observed, [canary_gate(T0 + 26 * MIN)], T0 + 26 * MIN)
    caught_up = md(status=promoted.status.to_wire(), canary=None, candidates=CANDIDATES,
                   stable={"version": "9", "modelUri": "models:/fraud/9", "replicas": 3})
    resolved = {"models:/fraud/9": Resolution("models:/fraud/9", "models:/fraud/9", "9", "r9")}
    adopted = plan(caught_up, {"stable": ready("9", 3)}, [], T0 + 30 * MIN, resolutions=resolved)
    assert adopted.status["stable"]["lineage"]["job"] == OFFER.job and "StableUpdated" not in reasons(adopted)
    assert condition(adopted.status, "SpecBehind")["status"] == "False"
