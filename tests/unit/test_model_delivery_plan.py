"""plan() and the pod builder for models that live elsewhere: registry aliases pinned to versions,
a moved alias starting a rollout, a rollback to the exact earlier version, unresolvable URIs and
failed fetches changing nothing, the storage initializer, per-track overrides, HPA and PDB."""

import datetime

from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.contract.modeluri import Resolution
from modelwarden.planning.plan import plan
from modelwarden.planning.types import ObservedTrack, PolicyVerdict
from tests.validation import validate_any

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
MIN = datetime.timedelta(minutes=1)
CHAMPION, CHALLENGER = "models:/fraud@champion", "models:/fraud@challenger"


def body(spec_changes=None, status=None):
    spec = {"model": "fraud", "stable": {"modelUri": CHAMPION, "replicas": 2}, "traffic": {"router": "replicas"},
            "storage": {"secretRef": {"name": "model-store"}}}
    spec.update(spec_changes or {})
    doc = {"apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": "fraud", "namespace": "ml", "uid": "uid-1", "generation": 1}, "spec": spec}
    if status is not None:
        doc["status"] = status
    return ModelDeployment.model_validate(doc)


def pinned(uri, version, run="run-%s"):
    name = uri.split("/")[1].split("@")[0]
    return Resolution(uri=uri, resolved_uri=f"models:/{name}/{version}", model_version=str(version), run_id=run % version)


def ready(version, replicas=2):
    return ObservedTrack(version=version, replicas=replicas, ready_replicas=replicas, updated_replicas=replicas, up_to_date=True)


def run(model, resolutions, observed=None, verdicts=(), now=T0, failures=None):
    result = plan(model, observed or {}, list(verdicts), now, resolutions=resolutions, fetch_failures=failures)
    after = ModelDeployment.model_validate({**model.model_dump(by_alias=True, exclude={"status"}), "status": result.status})
    return result, after


def condition(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def deployment(result, track):
    return next(c for c in result.children if c["kind"] == "Deployment" and c["metadata"]["name"] == f"fraud-{track}")


def test_an_alias_is_pinned_to_its_version_in_status_history_and_the_pods():
    result, _ = run(body(), {CHAMPION: pinned(CHAMPION, 1)})
    stable = result.status["stable"]
    assert (stable["version"], stable["modelUri"], stable["resolvedUri"], stable["modelVersion"], stable["runId"]) == (
        "1", CHAMPION, "models:/fraud/1", "1", "run-1")
    assert result.status["history"][0] | {"promotedAt": None} == {
        "version": "1", "modelUri": CHAMPION, "resolvedUri": "models:/fraud/1", "modelVersion": "1", "runId": "run-1",
        "promotedAt": None, "reason": "Initial"}
    pod = deployment(result, "stable")["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["name"] == "fetch-model" and fetch["args"][:3] == ["fetch-model", "models:/fraud/1", "/var/run/modelwarden/model"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "model-store"}}]
    server_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert server_env["MODEL_PATH"] == "/var/run/modelwarden/model" and server_env["MODEL_URI"] == "models:/fraud/1"
    assert {"name": "modelwarden-model", "mountPath": "/var/run/modelwarden/model", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert condition(result.status, "ModelResolved")["status"] == "True"
    assert validate_any(deployment(result, "stable")) == []


def test_a_moved_stable_alias_is_a_spec_change_and_a_rollback_returns_to_the_exact_version():
    _, first = run(body(), {CHAMPION: pinned(CHAMPION, 1)})
    _, first = run(first, {CHAMPION: pinned(CHAMPION, 1)}, {"stable": ready("1")})
    again, _ = run(first, {CHAMPION: pinned(CHAMPION, 1)}, {"stable": ready("1")}, now=T0 + MIN)
    assert again.events == []  # the same resolution: nothing to do
    moved, second = run(first, {CHAMPION: pinned(CHAMPION, 2)}, {"stable": ready("1")}, now=T0 + 2 * MIN)
    assert [e.reason for e in moved.events] == ["StableUpdated"]
    assert "models:/fraud/2" in moved.events[0].message
    assert deployment(moved, "stable")["spec"]["template"]["spec"]["initContainers"][0]["args"][1] == "models:/fraud/2"
    assert [(h["version"], h["resolvedUri"]) for h in moved.status["history"]] == [("1", "models:/fraud/1"), ("2", "models:/fraud/2")]
    breach = PolicyVerdict(name="quality", track="stable", verdict="Fail", evaluated_at=T0 + 9 * MIN, consecutive_failures=3,
                           failure_threshold=3, rollback=True, failing_checks=("performance/accuracy",), version="2")
    # The alias still names 2, yet the rollback serves exactly what served before: models:/fraud/1.
    rolled, after = run(second, {CHAMPION: pinned(CHAMPION, 2)}, {"stable": ready("2")}, [breach], now=T0 + 10 * MIN)
    assert [e.reason for e in rolled.events] == ["StableRolledBack"]
    assert (after.status.stable.version, after.status.stable.resolved_uri, after.status.stable.run_id) == ("1", "models:/fraud/1", "run-1")
    assert deployment(rolled, "stable")["spec"]["template"]["spec"]["initContainers"][0]["args"][1] == "models:/fraud/1"
    # And it stays there while the alias is unchanged.
    held, _ = run(after, {CHAMPION: pinned(CHAMPION, 2)}, {"stable": ready("1")}, now=T0 + 11 * MIN)
    assert held.events == [] and held.status["stable"]["resolvedUri"] == "models:/fraud/1"


def test_a_moved_canary_alias_starts_a_new_canary_rollout_of_the_new_version():
    spec = {"canary": {"modelUri": CHALLENGER, "steps": [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "5m"}]}}
    resolutions = {CHAMPION: pinned(CHAMPION, 1), CHALLENGER: pinned(CHALLENGER, 3)}
    started, model = run(body(spec), resolutions)
    assert [e.reason for e in started.events] == ["CanaryStarted"]
    assert model.status.canary.version == "3" and model.status.canary.resolved_uri == "models:/fraud/3"
    model = model.model_copy(update={"status": model.status.model_copy(update={"canary_step": 1, "step_started_at": T0 + MIN})})
    resolutions[CHALLENGER] = pinned(CHALLENGER, 4)
    moved, after = run(model, resolutions, {"stable": ready("1"), "canary": ready("3", 1)}, now=T0 + 3 * MIN)
    assert [e.reason for e in moved.events][:1] == ["CanaryStarted"]
    assert (after.status.canary.version, after.status.canary_step, after.status.canary_started_at) == ("4", 0, T0 + 3 * MIN)
    assert deployment(moved, "canary")["spec"]["template"]["spec"]["initContainers"][0]["args"][1] == "models:/fraud/4"


def test_an_alias_that_cannot_be_resolved_creates_nothing_then_changes_nothing():
    nothing, model = run(body(), {CHAMPION: "models:/fraud@champion: cannot reach http://mlflow:5000"})
    assert nothing.children == [] and [e.reason for e in nothing.events] == ["ModelResolveFailed"]
    assert condition(nothing.status, "ModelResolved")["status"] == "False"
    assert "cannot reach" in condition(nothing.status, "ModelResolved")["message"] and nothing.status["phase"] == "Pending"
    quiet, _ = run(model, {CHAMPION: "models:/fraud@champion: cannot reach http://mlflow:5000"})
    assert quiet.events == []  # announced once
    served, model = run(model, {CHAMPION: pinned(CHAMPION, 1)})
    assert condition(served.status, "ModelResolved")["status"] == "True" and deployment(served, "stable")
    down, after = run(model, {CHAMPION: "registry unreachable"}, {"stable": ready("1")}, now=T0 + MIN)
    assert deployment(down, "stable") == deployment(served, "stable")  # what serves is kept as it is
    assert [e.reason for e in down.events] == ["ModelResolveFailed"]
    assert after.status.stable.resolved_uri == "models:/fraud/1"
    still, _ = run(after, {CHAMPION: "registry unreachable"}, {"stable": ready("1")}, now=T0 + 2 * MIN)
    assert still.events == []  # announced once per change


def test_a_canary_whose_model_cannot_be_fetched_gets_no_traffic_and_says_why():
    spec = {"stable": {"version": "1", "modelUri": "s3://models/fraud/1/model.joblib", "replicas": 2},
            "canary": {"version": "2", "modelUri": "s3://models/fraud/2/model.joblib", "weight": 20}}
    failing = {"canary": "fetch-model: no object or prefix s3://models/fraud/2/model.joblib"}
    result, model = run(body(spec), {}, {"stable": ready("1")}, failures=failing)
    assert result.status["weights"]["canary"] == 0
    fetch = condition(result.status, "ModelFetchFailed")
    assert (fetch["status"], fetch["reason"]) == ("True", "StorageInitializerFailed") and "canary: fetch-model: no object" in fetch["message"]
    assert "ModelFetchFailed" in [e.reason for e in result.events]
    assert deployment(result, "stable")["spec"]["replicas"] == 2  # the serving track is untouched
    again, _ = run(model, {}, {"stable": ready("1")}, failures=failing, now=T0 + MIN)
    assert "ModelFetchFailed" not in [e.reason for e in again.events]
    fixed, _ = run(model, {}, {"stable": ready("1"), "canary": ready("2", 1)}, now=T0 + 2 * MIN)
    assert condition(fixed.status, "ModelFetchFailed")["status"] == "False" and fixed.status["weights"]["canary"] > 0


def test_tracks_differ_by_image_resources_env_and_placement_and_scale_with_an_hpa():
    template = {"spec": {"containers": [{"name": "server", "image": "ghcr.io/example/serve:1",
                                         "resources": {"requests": {"cpu": "500m"}}},
                                        {"name": "sidecar", "image": "ghcr.io/example/log:1"}],
                         "initContainers": [{"name": "warmup", "image": "busybox"}]}}
    spec = {"template": template,
            "stable": {"version": "1", "modelUri": "pvc://models/fraud/1", "replicas": 3},
            "canary": {"version": "2", "modelUri": "gs://fraud-models/2/model.skops", "weight": 10,
                       "image": "ghcr.io/example/serve:2-sklearn1.9",
                       "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}},
                       "env": [{"name": "OMP_NUM_THREADS", "value": "2"}],
                       "nodeSelector": {"gpu": "a100"},
                       "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                       "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPU": 60}},
            "traffic": {"router": "istio"}}  # an autoscaled canary needs a mesh router: its weight is no pod ratio
    result, _ = run(body(spec), {})
    stable, canary = deployment(result, "stable"), deployment(result, "canary")
    stable_pod, canary_pod = stable["spec"]["template"]["spec"], canary["spec"]["template"]["spec"]
    assert stable_pod["containers"][0]["image"] == "ghcr.io/example/serve:1"
    assert canary_pod["containers"][0]["image"] == "ghcr.io/example/serve:2-sklearn1.9"
    assert canary_pod["containers"][0]["resources"] == {"requests": {"cpu": "500m"}, "limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}}
    assert {"name": "OMP_NUM_THREADS", "value": "2"} in canary_pod["containers"][0]["env"]
    assert canary_pod["nodeSelector"] == {"gpu": "a100"} and "nodeSelector" not in stable_pod
    # The pvc track mounts its claim read-only and fetches nothing; the gs track fetches.
    assert "initContainers" not in stable_pod or all(c["name"] != "fetch-model" for c in stable_pod["initContainers"])
    assert {"name": "modelwarden-model-claim", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in stable_pod["volumes"]
    assert {e["name"]: e.get("value") for e in stable_pod["containers"][0]["env"]}["MODEL_PATH"] == "/var/run/modelwarden/claim/fraud/1"
    assert [c["name"] for c in canary_pod["initContainers"]] == ["warmup", "fetch-model"]
    # Every container of the user's knows the model it sits beside.
    for container in (stable_pod["containers"][1], stable_pod["initContainers"][0]):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["MODEL_URI"], env["MODEL_VERSION"], env["MODEL_TRACK"]) == ("pvc://models/fraud/1", "1", "stable")
    # The autoscaled canary: an HPA, and no replicas from the operator; the 3-replica stable gets a PDB.
    assert "replicas" not in canary["spec"] and stable["spec"]["replicas"] == 3
    hpa = next(c for c in result.children if c["kind"] == "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "fraud-canary" and hpa["spec"]["scaleTargetRef"]["name"] == "fraud-canary"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    budgets = {c["metadata"]["name"] for c in result.children if c["kind"] == "PodDisruptionBudget"}
    assert budgets == {"fraud-stable", "fraud-canary"}  # more than one replica (the canary: its HPA's minimum)
    for child in result.children:
        assert validate_any(child) == [], child["kind"]


def test_an_hpa_scaled_track_keeps_the_replicas_the_hpa_chose():
    spec = {"stable": {"version": "1", "modelUri": "s3://models/fraud/1/model.joblib",
                       "autoscaling": {"minReplicas": 2, "maxReplicas": 8}},
            "canary": {"version": "2", "modelUri": "s3://models/fraud/2/model.joblib", "replicas": 1, "weight": 20}}
    model = body(spec)
    result = plan(model, {"stable": ready("1", 5), "canary": ready("2", 1)}, [], T0, autoscaled={"stable": 5})
    stable = deployment(result, "stable")
    assert "replicas" not in stable["spec"]
    assert result.status["stable"]["replicas"] == 5


def test_a_rollout_with_an_old_pod_left_is_not_rolled_out():
    """A 1-replica track whose new pod never starts: the real Deployment controller reports one
    updated pod, not ready, beside the old ready one. The old version serves; the new is not ready."""
    stuck = {"metadata": {"generation": 2}, "spec": {"replicas": 1, "template": {"metadata": {"labels": {"version": "2"}}}},
             "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 1,
                        "availableReplicas": 1, "unavailableReplicas": 1}}
    assert not ObservedTrack.from_deployment(stuck).ready_for("2", 1)
    done = {**stuck, "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
    assert ObservedTrack.from_deployment(done).ready_for("2", 1)


def test_the_storage_initializers_failure_is_read_from_pod_status():
    from modelwarden.controller.modelpods import fetch_failure

    def pod(state, last=None):
        status = {"name": "fetch-model", "state": state, **({"lastState": last} if last else {})}
        return {"status": {"initContainerStatuses": [{"name": "warmup", "state": {"terminated": {"exitCode": 0}}}, status]}}

    failed = {"terminated": {"exitCode": 1, "message": "fetch-model: no object or prefix s3://models/fraud/2\n"}}
    assert fetch_failure(pod(failed)) == "fetch-model: no object or prefix s3://models/fraud/2"
    assert fetch_failure(pod({"waiting": {"reason": "CrashLoopBackOff"}}, last=failed)) == "fetch-model: no object or prefix s3://models/fraud/2"
    assert "secret \"store\" not found" in fetch_failure(pod({"waiting": {"reason": "CreateContainerConfigError",
                                                                          "message": 'secret "store" not found'}}))
    assert fetch_failure(pod({"running": {}})) is None
    assert fetch_failure(pod({"terminated": {"exitCode": 0}})) is None
    paired = {"status": {"initContainerStatuses": [{"name": "fetch-model", "state": {"terminated": {"exitCode": 0}}},
                                                   {"name": "fetch-paired-model", "state": failed}]}}
    assert fetch_failure(paired) == "the stable's model (pairWithStable): fetch-model: no object or prefix s3://models/fraud/2"


def test_an_outage_of_the_registry_never_undoes_a_promotion_or_a_rollback():
    """Unresolved, the stable alias is no spec change: what status records keeps serving, and when
    the registry answers again (naming what it named before) nothing moves."""
    spec = {"canary": {"modelUri": CHALLENGER, "steps": [{"weight": 50, "pause": "1m"}]}}
    resolutions = {CHAMPION: pinned(CHAMPION, 3), CHALLENGER: pinned(CHALLENGER, 5)}
    _, model = run(body(spec), resolutions)
    observed = {"stable": ready("3", 1), "canary": ready("5", 1)}  # 2 pods in all, one each at 50 %
    _, model = run(model, resolutions, observed, now=T0 + MIN)  # the step's weights seen applied
    gate = PolicyVerdict(name="gate", track="canary", verdict="Pass", evaluated_at=T0 + 5 * MIN, consecutive_failures=0,
                         failure_threshold=3, rollback=True, version="5", window=MIN)
    promoted, model = run(model, resolutions, observed, [gate], now=T0 + 6 * MIN)
    assert "CanaryPromoted" in [e.reason for e in promoted.events] and model.status.stable.version == "5"
    down = {CHAMPION: "registry unreachable", CHALLENGER: "registry unreachable"}
    outage, model = run(model, down, {"stable": ready("5")}, now=T0 + 7 * MIN)
    assert [e.reason for e in outage.events] == ["ModelResolveFailed"] and model.status.stable.version == "5"
    back, model = run(model, resolutions, {"stable": ready("5")}, now=T0 + 8 * MIN)
    assert back.events == [] and model.status.stable.resolved_uri == "models:/fraud/5"
    # Moving champion to the promoted version adopts it: no rollout, the record names the alias.
    resolutions[CHAMPION] = pinned(CHAMPION, 5)
    adopted, model = run(model, resolutions, {"stable": ready("5")}, now=T0 + 9 * MIN)
    assert adopted.events == [] and (model.status.stable.model_uri, model.status.stable.resolved_uri) == (CHAMPION, "models:/fraud/5")
    assert condition(adopted.status, "Promoted")["status"] == "True"


def test_a_canary_that_cannot_fetch_keeps_its_pods_retrying_at_no_traffic_and_its_step_waits():
    """With the replica-ratio router, weight 0 would scale the canary to 0 pods, hiding the failure
    (and flapping). Its pods stay, get no traffic, and the step's clock does not start."""
    spec = {"stable": {"version": "1", "modelUri": "s3://models/fraud/1/model.joblib", "replicas": 4},
            "canary": {"version": "2", "modelUri": "s3://models/fraud/2/model.joblib", "replicas": 1,
                       "steps": [{"weight": 25, "pause": "1m"}, {"weight": 50, "pause": "1m"}]}}
    failing = {"canary": "fetch-model: access denied (SignatureDoesNotMatch)"}
    observed = {"stable": ready("1", 4), "canary": ObservedTrack("2", 1, 0, 1, True)}
    result, model = run(body(spec), {}, observed, failures=failing)
    for minute in range(1, 4):
        result, model = run(model, {}, {"stable": ready("1", 4), "canary": ObservedTrack("2", 1, 0, 1, True)},
                            failures=failing, now=T0 + minute * MIN)
        assert deployment(result, "canary")["spec"]["replicas"] == 1
        assert deployment(result, "stable")["spec"]["replicas"] == 4  # the serving track is untouched
        assert result.status["weights"] == {"stable": 100, "canary": 0, "mirror": 0}
        assert result.events == [] and model.status.step_started_at is None
    assert condition(result.status, "ModelFetchFailed")["status"] == "True"


def test_a_paired_shadow_also_fetches_the_stables_exact_version_and_is_told_where_it_is():
    spec = {"stable": {"modelUri": CHAMPION, "replicas": 2},
            "shadow": {"modelUri": CHALLENGER, "pairWithStable": True}, "traffic": {"router": "istio"}}
    resolutions = {CHAMPION: pinned(CHAMPION, 7), CHALLENGER: pinned(CHALLENGER, 8)}
    result, _ = run(body(spec), resolutions, {"stable": ready("7")})
    shadow = deployment(result, "shadow")
    pod = shadow["spec"]["template"]["spec"]
    fetchers = {c["name"]: c for c in pod["initContainers"]}
    assert fetchers["fetch-model"]["args"][1:3] == ["models:/fraud/8", "/var/run/modelwarden/model"]
    assert fetchers["fetch-paired-model"]["args"][1:3] == ["models:/fraud/7", "/var/run/modelwarden/paired"]
    assert fetchers["fetch-paired-model"]["envFrom"] == [{"secretRef": {"name": "model-store"}}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MODELWARDEN_PAIRED_MODEL_VERSION"] == "7" and env["MODELWARDEN_PAIRED_MODEL_PATH"] == "/var/run/modelwarden/paired"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["modelwarden-paired-model"] == {"name": "modelwarden-paired-model", "mountPath": "/var/run/modelwarden/paired",
                                                  "readOnly": True}
    assert validate_any(shadow) == []
    stable_pod = deployment(result, "stable")["spec"]["template"]["spec"]
    assert [c["name"] for c in stable_pod["initContainers"]] == ["fetch-model"]  # only a shadow is paired
    unpaired = {**spec, "shadow": {"modelUri": CHALLENGER}}
    result, _ = run(body(unpaired), resolutions, {"stable": ready("7")})
    pod = deployment(result, "shadow")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-model"]
    assert "MODELWARDEN_PAIRED_MODEL_VERSION" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_a_paired_shadow_reads_a_stable_on_a_claim_or_a_local_path_where_it_is():
    on_claim = {"stable": {"version": "1", "modelUri": "pvc://models/fraud/1", "replicas": 1},
                "shadow": {"version": "2", "modelUri": "pvc://models/fraud/2", "pairWithStable": True}, "traffic": {"router": "istio"}}
    result, _ = run(body(on_claim), {}, {"stable": ready("1", 1)})
    pod = deployment(result, "shadow")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MODELWARDEN_PAIRED_MODEL_PATH"] == "/var/run/modelwarden/paired-claim/fraud/1" and "initContainers" not in pod
    claims = {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}
    assert claims["modelwarden-paired-claim"] == {"claimName": "models", "readOnly": True}
    local = {"stable": {"version": "1", "modelUri": "file:///models/fraud/1", "replicas": 1},
             "shadow": {"version": "2", "modelUri": "file:///models/fraud/2", "pairWithStable": True}, "traffic": {"router": "istio"}}
    result, _ = run(body(local), {}, {"stable": ready("1", 1)})
    env = {e["name"]: e.get("value") for e in deployment(result, "shadow")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELWARDEN_PAIRED_MODEL_URI"] == "file:///models/fraud/1" and env["MODELWARDEN_PAIRED_MODEL_VERSION"] == "1"
