"""plan(): every ModelDeployment transition, table-driven where the shape allows."""

import copy
import datetime

import pytest

from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.planning.plan import plan
from modelwarden.planning.types import ObservedTrack, PolicyVerdict

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
MIN = datetime.timedelta(minutes=1)

BASE = {
    "apiVersion": "modelwarden.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "ml", "uid": "uid-1", "generation": 1},
    "spec": {
        "model": "fraud",
        "stable": {"version": "7", "modelUri": "s3://models/7", "replicas": 3},
        "canary": {"version": "8", "modelUri": "s3://models/8", "replicas": 1,
                   "steps": [{"weight": 10, "pause": "10m"}, {"weight": 50, "pause": "10m"}]},
        "traffic": {"router": "istio"},
    },
}


def md(status=None, **spec_changes):
    body = copy.deepcopy(BASE)
    for key, value in spec_changes.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = value
    if status is not None:
        body["status"] = status
    return ModelDeployment.model_validate(body)


def ready(version, replicas):
    return ObservedTrack(version=version, replicas=replicas, ready_replicas=replicas, updated_replicas=replicas, up_to_date=True)


def verdict(track="canary", result="Pass", at=T0, failures=0, threshold=3, rollback=True, name="gate", version=None):
    return PolicyVerdict(name=name, track=track, verdict=result, evaluated_at=at, consecutive_failures=failures,
                         failure_threshold=threshold, rollback=rollback, failing_checks=("drift/age",) if result == "Fail" else (),
                         version=version)


def applied_route(model):
    """The VirtualService as the cluster shows it: with the weights of the model's last plan applied."""
    if model.status is None:
        return []
    weights = model.status.weights
    return [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "fraud"},
             "spec": {"http": [{"route": [{"destination": {"host": "fraud-stable"}, "weight": weights.stable},
                                          {"destination": {"host": "fraud-canary"}, "weight": weights.canary}]}]}}]


def step(model, observed=None, verdicts=(), now=T0, routes=None):
    result = plan(model, observed or {}, list(verdicts), now, routes=applied_route(model) if routes is None else routes)
    return result, ModelDeployment.model_validate({**BASE, "metadata": model.metadata, "spec": model.spec.to_wire(),
                                                   "status": result.status})


def applied(model, observed=None, now=T0):
    """One reconcile that sees the planned weights applied: the step's clock starts at `now`."""
    return step(model, observed or ALL_READY, [], now=now)[1]


def reasons(result):
    return [e.reason for e in result.events]


def condition(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_first_plan_starts_the_canary_at_its_first_step():
    result, _ = step(md())
    assert result.status["canaryStep"] == 0
    assert result.status["weights"] == {"stable": 90, "canary": 10, "mirror": 0}
    assert result.status["history"][0]["reason"] == "Initial"
    assert result.status["phase"] == "Progressing"
    assert reasons(result) == ["CanaryStarted"]
    names = [(c["kind"], c["metadata"]["name"]) for c in result.children]
    assert names == [("Service", "fraud"), ("Deployment", "fraud-stable"), ("Service", "fraud-stable"),
                     ("PodDisruptionBudget", "fraud-stable"),  # 3 replicas; the 1-replica canary gets none
                     ("Deployment", "fraud-canary"), ("Service", "fraud-canary"), ("VirtualService", "fraud")]


ALL_READY = {"stable": ready("7", 3), "canary": ready("8", 1)}


@pytest.mark.parametrize(
    "elapsed, observed, verdicts, advances",
    [
        (11 * MIN, ALL_READY, [verdict(at=T0 + 5 * MIN)], True),  # pause over, ready, gate passed during the step
        (9 * MIN, ALL_READY, [verdict(at=T0 + 5 * MIN)], False),  # pause not over
        (11 * MIN, {"stable": ready("7", 3)}, [verdict(at=T0 + 5 * MIN)], False),  # canary not ready
        (11 * MIN, ALL_READY, [verdict(at=T0 - MIN)], False),  # gate passed before the step started
        (11 * MIN, ALL_READY, [verdict(result="InsufficientData", at=T0 + 5 * MIN)], False),
        (11 * MIN, ALL_READY, [verdict(result="Error", at=T0 + 5 * MIN)], False),
        (11 * MIN, ALL_READY, [verdict(result="Fail", at=T0 + 5 * MIN, failures=1)], False),  # below threshold: hold
        (11 * MIN, ALL_READY, [verdict(track="stable", result="Fail", at=T0, failures=1)], True),  # not a gate
        (11 * MIN, ALL_READY, [], True),  # no gating policy: the pause alone gates
    ],
)
def test_step_advance_rules(elapsed, observed, verdicts, advances):
    _, current = step(md())
    current = applied(current, observed)
    result, _ = step(current, observed, verdicts, now=T0 + elapsed)
    assert (result.status["canaryStep"] == 1) is advances
    assert ("CanaryStepAdvanced" in reasons(result)) is advances


def test_last_step_promotes_and_records_history():
    _, current = step(md())
    _, current = step(applied(current), ALL_READY, [verdict(at=T0 + MIN)], now=T0 + 11 * MIN)
    current = applied(current, now=T0 + 11 * MIN)
    result, promoted = step(current, ALL_READY, [verdict(at=T0 + 15 * MIN)], now=T0 + 22 * MIN)
    assert "CanaryPromoted" in reasons(result)
    status = result.status
    assert status["stable"]["version"] == "8" and "canary" not in status and "canaryStep" not in status
    assert status["weights"]["canary"] == 0
    assert [(h["version"], h["reason"]) for h in status["history"]] == [("7", "Initial"), ("8", "Promoted")]
    assert status["history"][0]["retiredAt"] == "2026-01-01T00:22:00Z"
    assert status["phase"] == "Promoting"  # the stable Deployment still runs 7
    assert condition(status, "Promoted")["status"] == "True"
    stable = next(c for c in result.children if c["metadata"]["name"] == "fraud-stable" and c["kind"] == "Deployment")
    assert stable["spec"]["template"]["metadata"]["labels"]["version"] == "8"
    assert not any(c["metadata"]["name"] == "fraud-canary" for c in result.children)
    settled, _ = step(promoted, {"stable": ready("8", 3)}, now=T0 + 23 * MIN)
    assert settled.status["phase"] == "Stable" and settled.events == []


def test_breached_gate_with_rollback_aborts_the_canary_once():
    _, current = step(md())
    failing = [verdict(result="Fail", failures=3, at=T0 + 3 * MIN)]
    result, aborted = step(current, ALL_READY, failing, now=T0 + 4 * MIN)
    status = result.status
    assert reasons(result) == ["CanaryAborted", "TrafficUpdated"]
    assert status["phase"] == "RolledBack" and status["weights"]["canary"] == 0
    assert status["rollback"]["track"] == "canary" and status["rollback"]["fromVersion"] == "8"
    assert "gate failed 3x (drift/age)" in status["rollback"]["reason"]
    canary = next(c for c in result.children if c["metadata"]["name"] == "fraud-canary" and c["kind"] == "Deployment")
    assert canary["spec"]["replicas"] == 0
    again, _ = step(aborted, ALL_READY, failing, now=T0 + 5 * MIN)
    assert again.events == [] and again.status["phase"] == "RolledBack"
    assert condition(again.status, "RolledBack")["status"] == "True"


def test_breached_gate_without_rollback_holds_the_canary():
    _, current = step(md())
    result, _ = step(current, ALL_READY, [verdict(result="Fail", failures=5, rollback=False, at=T0 + 11 * MIN)],
                     now=T0 + 12 * MIN)
    assert result.status["phase"] == "Progressing" and result.status["canaryStep"] == 0
    assert "rollback" not in result.status


def test_new_canary_version_or_retry_starts_over_after_a_rollback():
    _, current = step(md())
    _, aborted = step(current, ALL_READY, [verdict(result="Fail", failures=3)], now=T0 + MIN)
    new_canary = md(status=aborted.status.to_wire(),
                    canary={**BASE["spec"]["canary"], "version": "9", "modelUri": "s3://models/9"})
    result, _ = step(new_canary, now=T0 + 2 * MIN)
    assert "rollback" not in result.status and result.status["canary"]["version"] == "9"
    assert result.status["canaryStep"] == 0 and "CanaryStarted" in reasons(result)
    retried = md(status=aborted.status.to_wire())
    retried.metadata["annotations"] = {"modelwarden.io/retry": "1"}
    result, after = step(retried, now=T0 + 3 * MIN)
    assert "rollback" not in result.status and result.status["phase"] == "Progressing"
    assert reasons(result)[:2] == ["RetryRequested", "CanaryStarted"]
    after.metadata["annotations"] = {"modelwarden.io/retry": "1"}
    assert "RetryRequested" not in reasons(step(after, now=T0 + 4 * MIN)[0])  # a token acts once


def test_fixed_weight_is_an_ab_split_that_never_promotes():
    ab = md(canary={"version": "8", "modelUri": "s3://models/8", "weight": 20})
    _, current = step(ab)
    result, _ = step(current, ALL_READY, [verdict(at=T0 + 100 * MIN)], now=T0 + 1000 * MIN)
    assert result.status["weights"]["canary"] == 20 and result.status["stable"]["version"] == "7"
    assert condition(result.status, "Progressing")["reason"] == "FixedWeight"


def stable_history_status():
    """Stable 8 promoted over 7."""
    _, current = step(md())
    _, current = step(applied(current), ALL_READY, [verdict(at=T0 + MIN)], now=T0 + 11 * MIN)
    _, current = step(applied(current, now=T0 + 11 * MIN), ALL_READY, [verdict(at=T0 + 12 * MIN)], now=T0 + 22 * MIN)
    return current


def test_stable_policy_breach_rolls_stable_back_to_the_previous_version_once():
    current = stable_history_status()
    failing = [verdict(track="stable", result="Fail", failures=3, at=T0 + 30 * MIN)]
    result, rolled = step(current, {"stable": ready("8", 3)}, failing, now=T0 + 31 * MIN)
    status = result.status
    assert "StableRolledBack" in reasons(result)
    assert status["stable"]["version"] == "7" and status["phase"] == "RolledBack"
    assert status["rollback"] == {**status["rollback"], "track": "stable", "fromVersion": "8", "toVersion": "7"}
    assert [(h["version"], h["reason"]) for h in status["history"]] == [
        ("7", "Initial"), ("8", "RolledBack"), ("7", "RollbackTarget")]
    # The same (old) evaluation never rolls back again; a fresh breach has no good version left.
    assert step(rolled, {"stable": ready("7", 3)}, failing, now=T0 + 32 * MIN)[0].events == []
    fresh = [verdict(track="stable", result="Fail", failures=3, at=T0 + 40 * MIN)]
    assert reasons(step(rolled, {"stable": ready("7", 3)}, fresh, now=T0 + 41 * MIN)[0]) == ["RollbackImpossible"]


def test_stable_breach_without_rollback_flag_or_below_threshold_does_nothing():
    current = stable_history_status()
    for failing in ([verdict(track="stable", result="Fail", failures=3, rollback=False, at=T0 + 30 * MIN)],
                    [verdict(track="stable", result="Fail", failures=2, at=T0 + 30 * MIN)],
                    [verdict(track="stable", result="InsufficientData", failures=9, at=T0 + 30 * MIN)]):
        result, _ = step(current, {"stable": ready("8", 3)}, failing, now=T0 + 31 * MIN)
        assert result.status["stable"]["version"] == "8" and result.events == []


def test_spec_stable_change_resets_the_served_stable():
    current = stable_history_status()
    changed = md(status=current.status.to_wire(), stable={"version": "10", "modelUri": "s3://models/10", "replicas": 3}, canary=None)
    result, _ = step(changed, now=T0 + 40 * MIN)
    assert result.status["stable"]["version"] == "10" and "StableUpdated" in reasons(result)
    assert result.status["history"][-1]["reason"] == "SpecChanged"


def test_history_is_bounded():
    status = md().model_copy()
    model = md(revisionHistoryLimit=2, canary=None)
    _, current = step(model)
    for version in ("8", "9", "10"):
        current = md(status=current.status.to_wire(), revisionHistoryLimit=2, canary=None,
                     stable={"version": version, "modelUri": f"s3://models/{version}", "replicas": 3})
        _, current = step(current)
    assert [h.version for h in current.status.history] == ["9", "10"]
    assert status is not None


def test_shadow_and_replicas_router():
    model = md(shadow={"version": "9", "modelUri": "s3://models/9", "mirrorPercent": 50}, traffic={"router": "replicas"})
    result, _ = step(model)
    replicas = {c["metadata"]["name"]: c["spec"]["replicas"] for c in result.children if c["kind"] == "Deployment"}
    assert replicas == {"fraud-stable": 2, "fraud-canary": 1, "fraud-shadow": 1}
    assert result.status["weights"] == {"stable": 67, "canary": 33, "mirror": 0}
    traffic = condition(result.status, "TrafficReady")
    assert traffic["status"] == "False" and traffic["reason"] == "MirroringUnsupported"
    assert "approximated by replica ratio" in traffic["message"]
    assert not any(c["kind"] in ("HTTPRoute", "VirtualService") for c in result.children)


def test_readiness_phases():
    model = md(canary=None)
    result, current = step(model)
    assert result.status["phase"] == "Pending" and condition(result.status, "Ready")["status"] == "False"
    result, current = step(current, {"stable": ready("7", 3)})
    assert result.status["phase"] == "Stable" and condition(result.status, "Ready")["status"] == "True"
    assert result.status["stable"]["readyReplicas"] == 3
    lost = ObservedTrack(version="7", replicas=3, ready_replicas=1, updated_replicas=3, up_to_date=True)
    result, _ = step(current, {"stable": lost})
    assert result.status["phase"] == "Degraded"


def test_unchanged_inputs_give_an_unchanged_status():
    _, current = step(md())
    again, _ = step(current, now=T0 + MIN, routes=[])  # still nothing applied, as in the first plan
    assert again.status == current.status.to_wire()
    assert again.events == []


def test_verdicts_about_another_version_are_ignored():
    _, current = step(md())
    stale = [verdict(result="Fail", failures=3, at=T0 + MIN, version="7-old-canary")]
    result, _ = step(current, ALL_READY, stale, now=T0 + 2 * MIN)
    assert result.status["phase"] == "Progressing" and "rollback" not in result.status
    about_this = [verdict(result="Fail", failures=3, at=T0 + MIN, version="8")]
    assert "CanaryAborted" in reasons(step(current, ALL_READY, about_this, now=T0 + 2 * MIN)[0])
    promoted = stable_history_status()
    old_stable = [verdict(track="stable", result="Fail", failures=3, at=T0 + 30 * MIN, version="7")]
    assert step(promoted, {"stable": ready("8", 3)}, old_stable, now=T0 + 31 * MIN)[0].events == []


def test_feedback_token_keys_are_mounted_into_every_track_from_the_secret():
    from tests.validation import validate_any

    template = {"spec": {"containers": [{"name": "server", "image": "ghcr.io/example/serve:1",
                                         "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
                         "volumes": [{"name": "cache", "emptyDir": {}}]}}
    model = md(feedback={"tokenSecretRef": {"name": "fraud-feedback", "key": "keys"}}, template=template)
    deployments = [c for c in plan(model, {}, [], T0).children if c["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"fraud-stable", "fraud-canary"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert [v for v in pod["volumes"] if v["name"] not in ("modelwarden-tmp", "modelwarden-model")] == [
            {"name": "cache", "emptyDir": {}}, {"name": "modelwarden-feedback-keys", "secret": {
            "secretName": "fraud-feedback", "items": [{"key": "keys", "path": "keys"}]}}]
        server = pod["containers"][0]
        assert server["volumeMounts"][-1] == {"name": "modelwarden-feedback-keys", "mountPath": "/var/run/modelwarden/feedback",
                                              "readOnly": True}
        env = {e["name"]: e.get("value") or e["valueFrom"] for e in server["env"]}
        assert env["MODELWARDEN_FEEDBACK_KEY_FILE"] == "/var/run/modelwarden/feedback/keys"
        assert env["MODELWARDEN_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert validate_any(deployment) == []
    # Without spec.feedback no key is mounted and no variable is set.
    plain = [c for c in plan(md(), {}, [], T0).children if c["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
    assert [v["name"] for v in plain["volumes"]] == ["modelwarden-tmp", "modelwarden-model"] and "MODELWARDEN_FEEDBACK_KEY_FILE" not in {e["name"] for e in plain["containers"][0]["env"]}
