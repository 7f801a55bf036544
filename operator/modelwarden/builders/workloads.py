"""Pure builders for the children of a ModelDeployment: per-track Deployments and Services and a
front Service for the model as a whole."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from modelwarden.api.modeldeployment import Autoscaling, TrackSpec
from modelwarden.api.tracks import OPERATOR_ENV  # set by the operator: a track's env never replaces them
from modelwarden.contract import environment, modeluri
from modelwarden.contract.kubernetes import API_VERSION, DEFAULT_IMAGE, INSTANCE_LABEL, MANAGED_BY, SERVING_LABEL


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children (for names, labels and ownerReferences)."""

    name: str
    namespace: str
    uid: str
    model: str
    api_version: str = API_VERSION
    kind: str = "ModelDeployment"

    def reference(self) -> dict[str, Any]:
        return owner_reference(self.kind, self.name, self.uid, self.api_version)


def owner_reference(kind: str, name: str, uid: str, api_version: str = API_VERSION) -> dict[str, Any]:
    """A controller ownerReference: the child is garbage-collected with its owner."""
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True, "blockOwnerDeletion": True}


@dataclass(frozen=True)
class PairedModel:
    """The stable's model, loaded beside a shadow's to score the same requests (ShadowTrack.pairWithStable)."""

    version: str
    model_uri: str
    sha256: str | None = None


@dataclass(frozen=True)
class TrackWorkload:
    """What one track runs."""

    track: str
    version: str
    model_uri: str  # what the pods load: a registry alias already pinned to its version
    replicas: int
    serving: bool  # receives user traffic through the front Service (stable, canary); a shadow does not
    sha256: str | None = None  # expected digest of the fetched model file
    paired: PairedModel | None = None


@dataclass(frozen=True)
class ModelStore:
    """How pods fetch a model that is not already on a path they have."""

    secret: str | None = None  # a Secret of store credentials, given whole to the storage initializer as env
    max_bytes: int = 10 * 1024**3
    mlflow_tracking_uri: str | None = None  # the operator's, for pods whose Secret names none


def track_name(owner: Owner, track: str) -> str:
    return f"{owner.name}-{track}"


def selector(owner: Owner, track: str | None = None) -> dict[str, str]:
    """Immutable selector labels: never the version, which changes on promotion and rollback."""
    labels = {INSTANCE_LABEL: owner.name}
    if track:
        labels["track"] = track
    return labels


def labels(owner: Owner, workload: TrackWorkload) -> dict[str, str]:
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": owner.model[:63],
        **selector(owner, workload.track),
        "model": owner.model,
        "version": workload.version,
        "track": workload.track,
        SERVING_LABEL: "true" if workload.serving else "false",
    }


def _metadata(owner: Owner, name: str, extra_labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": owner.namespace, "labels": extra_labels, "ownerReferences": [owner.reference()]}


def _env(owner: Owner, workload: TrackWorkload, port: int) -> list[dict[str, str]]:
    return [
        {"name": environment.MODEL_NAME, "value": owner.model},
        {"name": environment.MODEL_VERSION, "value": workload.version},
        {"name": environment.MODEL_TRACK, "value": workload.track},
        {"name": environment.MODEL_URI, "value": workload.model_uri},
        {"name": "PORT", "value": str(port)},
    ]


FEEDBACK_KEY_VOLUME = "modelwarden-feedback-keys"
FEEDBACK_KEY_DIR = "/var/run/modelwarden/feedback"


def _mount_feedback_keys(spec: dict[str, Any], container: dict[str, Any], secret: tuple[str, str]) -> None:
    """The Secret key with the feedback-token keys, read-only, and MODELWARDEN_FEEDBACK_KEY_FILE naming it."""
    name, key = secret
    volume = {"name": FEEDBACK_KEY_VOLUME, "secret": {"secretName": name, "items": [{"key": key, "path": "keys"}]}}
    spec["volumes"] = [v for v in spec.get("volumes", []) if v.get("name") != FEEDBACK_KEY_VOLUME] + [volume]
    mount = {"name": FEEDBACK_KEY_VOLUME, "mountPath": FEEDBACK_KEY_DIR, "readOnly": True}
    container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m.get("name") != FEEDBACK_KEY_VOLUME] + [mount]
    # Tokens name the namespace, so a key shared by two namespaces cannot carry feedback across.
    ours = {environment.FEEDBACK_KEY_FILE, environment.NAMESPACE}
    container["env"] = [e for e in container["env"] if e.get("name") not in ours] + [
        {"name": environment.FEEDBACK_KEY_FILE, "value": f"{FEEDBACK_KEY_DIR}/keys"},
        {"name": environment.NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]


# Pod Security Standards "restricted", plus a read-only root filesystem. Every key is a default:
# a key the user's template sets (even to a weaker value) is kept, so hardening never blocks an
# image that needs something else (docs/security.md, "Model pods").
POD_SECURITY_DEFAULTS: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_DEFAULTS: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
TMP_VOLUME = "modelwarden-tmp"
TMP_DIR = "/tmp"  # the image's HOME and TMPDIR: the one path the server (and joblib, numpy) may write


def _harden(spec: dict[str, Any], container: dict[str, Any]) -> None:
    """Restricted securityContext defaults on the pod and on the model-server container; with a
    read-only root, an emptyDir at /tmp unless the template already mounts something there.
    Other containers of the template keep their own settings (the pod-level ones still apply)."""
    spec["securityContext"] = {**copy.deepcopy(POD_SECURITY_DEFAULTS), **(spec.get("securityContext") or {})}
    container["securityContext"] = {**copy.deepcopy(CONTAINER_SECURITY_DEFAULTS), **(container.get("securityContext") or {})}
    if container["securityContext"].get("readOnlyRootFilesystem") and not any(
            m.get("mountPath", "").rstrip("/") == TMP_DIR for m in container.get("volumeMounts", [])):
        spec["volumes"] = [v for v in spec.get("volumes", []) if v.get("name") != TMP_VOLUME] + [
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}]
        container["volumeMounts"] = [*container.get("volumeMounts", []), {"name": TMP_VOLUME, "mountPath": TMP_DIR}]


MODEL_VOLUME = "modelwarden-model"
MODEL_DIR = "/var/run/modelwarden/model"  # the storage initializer's download, read-only for the server
PVC_VOLUME = "modelwarden-model-claim"
PVC_DIR = "/var/run/modelwarden/claim"
FETCH_CONTAINER = "fetch-model"
PAIRED_MODEL_VOLUME = "modelwarden-paired-model"
PAIRED_MODEL_DIR = "/var/run/modelwarden/paired"  # the stable's model in a paired shadow pod
PAIRED_FETCH_CONTAINER = "fetch-paired-model"
STORE_SECRET_DIR = "/var/run/modelwarden/store"  # the store Secret as files (gcs-credentials.json)


def _without(items: list[dict[str, Any]], names: set[str]) -> list[dict[str, Any]]:
    return [item for item in items if item.get("name") not in names]


@dataclass(frozen=True)
class _Slot:
    """Where one model lands in a pod: its emptyDir (or claim) and mount, the init container that
    fetches it, and the variable that tells the server the path."""

    volume: str
    directory: str
    claim_volume: str
    claim_directory: str
    container: str
    path_env: str


MODEL_SLOT = _Slot(MODEL_VOLUME, MODEL_DIR, PVC_VOLUME, PVC_DIR, FETCH_CONTAINER, "MODEL_PATH")
PAIRED_SLOT = _Slot(PAIRED_MODEL_VOLUME, PAIRED_MODEL_DIR, "modelwarden-paired-claim", "/var/run/modelwarden/paired-claim",
                    PAIRED_FETCH_CONTAINER, environment.PAIRED_MODEL_PATH)


def _deliver_model(spec: dict[str, Any], server: dict[str, Any], model_uri: str, sha256: str | None, store: ModelStore,
                   image: str, slot: _Slot = MODEL_SLOT) -> None:
    """Put the model where the server reads it (the slot's path variable): a PVC mounted read-only,
    or an emptyDir the storage initializer (`modelwarden fetch-model`, the operator's image) fills first."""
    uri = modeluri.parse(model_uri)
    if uri.scheme is modeluri.Scheme.PVC:
        spec["volumes"] = [*_without(spec.get("volumes", []), {slot.claim_volume}),
                           {"name": slot.claim_volume, "persistentVolumeClaim": {"claimName": uri.location, "readOnly": True}}]
        server["volumeMounts"] = [*_without(server.get("volumeMounts", []), {slot.claim_volume}),
                                  {"name": slot.claim_volume, "mountPath": slot.claim_directory, "readOnly": True}]
        server["env"] = [*_without(server["env"], {slot.path_env}),
                         {"name": slot.path_env, "value": f"{slot.claim_directory}/{uri.path}".rstrip("/")}]
        return
    if not uri.fetched:
        if slot is PAIRED_SLOT:  # the served model's MODEL_URI is already in the env
            server["env"] = [*_without(server["env"], {environment.PAIRED_MODEL_URI}),
                             {"name": environment.PAIRED_MODEL_URI, "value": model_uri}]
        return
    size = f"{max(1, -(-store.max_bytes // 1024**2))}Mi"
    spec["volumes"] = [*_without(spec.get("volumes", []), {slot.volume}), {"name": slot.volume, "emptyDir": {"sizeLimit": size}}]
    server["volumeMounts"] = [*_without(server.get("volumeMounts", []), {slot.volume}),
                              {"name": slot.volume, "mountPath": slot.directory, "readOnly": True}]
    server["env"] = [*_without(server["env"], {slot.path_env}), {"name": slot.path_env, "value": slot.directory}]
    args = ["fetch-model", model_uri, slot.directory, "--max-bytes", str(store.max_bytes)]
    if sha256:
        args += ["--sha256", sha256]
    env = [e for e in server["env"] if e["name"] in (environment.MODEL_NAME, environment.MODEL_VERSION,
                                                      environment.MODEL_TRACK, environment.MODEL_URI)]
    mounts = [{"name": slot.volume, "mountPath": slot.directory}, {"name": TMP_VOLUME, "mountPath": TMP_DIR}]
    fetcher: dict[str, Any] = {
        "name": slot.container, "image": image, "args": args, "env": env, "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_DEFAULTS),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    if store.secret:
        fetcher["envFrom"] = [{"secretRef": {"name": store.secret}}]
        if uri.scheme is modeluri.Scheme.GCS:
            spec["volumes"] = [*_without(spec.get("volumes", []), {"modelwarden-store"}),
                               {"name": "modelwarden-store", "secret": {"secretName": store.secret}}]
            mounts.append({"name": "modelwarden-store", "mountPath": STORE_SECRET_DIR, "readOnly": True})
            env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{STORE_SECRET_DIR}/gcs-credentials.json"})
    if uri.registry:
        if store.mlflow_tracking_uri:  # the operator's, used unless the store Secret names MLFLOW_TRACKING_URI
            env.append({"name": "MODELWARDEN_DEFAULT_MLFLOW_TRACKING_URI", "value": store.mlflow_tracking_uri})
        # mlflow's client retries 7 times with growing waits: an unreachable registry would hold
        # the pod for minutes before ModelFetchFailed could say so.
        env += [{"name": "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "value": "2"}, {"name": "MLFLOW_HTTP_REQUEST_TIMEOUT", "value": "60"}]
    spec["initContainers"] = [*_without(spec.get("initContainers", []), {slot.container}), fetcher]
    _ensure_tmp(spec)


def _pair(spec: dict[str, Any], server: dict[str, Any], paired: PairedModel, store: ModelStore, image: str) -> None:
    """The stable's model beside the served one (ShadowTrack.pairWithStable), and its version."""
    server["env"] = [*_without(server["env"], {environment.PAIRED_MODEL_VERSION}),
                     {"name": environment.PAIRED_MODEL_VERSION, "value": paired.version}]
    _deliver_model(spec, server, paired.model_uri, paired.sha256, store, image, PAIRED_SLOT)


def _ensure_tmp(spec: dict[str, Any]) -> None:
    if not any(v.get("name") == TMP_VOLUME for v in spec.get("volumes", [])):
        spec["volumes"] = [*spec.get("volumes", []), {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}]


def _override(spec: dict[str, Any], server: dict[str, Any], track: TrackSpec | None) -> None:
    """A track's own image, resources, env, node selector and tolerations over the shared template."""
    if track is None:
        return
    if track.image:
        server["image"] = track.image
    if track.resources is not None:
        resources = server.setdefault("resources", {})
        for part in ("requests", "limits"):
            values = getattr(track.resources, part)
            if values:
                resources[part] = {**resources.get(part, {}), **{k: v for k, v in values.items()}}
    if track.env:
        names = {e.name for e in track.env} - OPERATOR_ENV
        server["env"] = [*_without(server.get("env", []), names), *(e.to_wire() for e in track.env if e.name in names)]
    if track.node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **track.node_selector}
    if track.tolerations:
        spec["tolerations"] = [*spec.get("tolerations", []), *(t.to_wire() for t in track.tolerations)]


def pod_template(owner: Owner, workload: TrackWorkload, template: dict[str, Any] | None, port: int,
                 image: str = DEFAULT_IMAGE, feedback_keys: tuple[str, str] | None = None,
                 store: ModelStore | None = None, overrides: TrackSpec | None = None) -> dict[str, Any]:
    """The user's pod template with our labels, scrape annotations and MODEL_* env on its first
    container (and the MODEL_* env on every other container, so a sidecar or init container of the
    user's knows the model too), the track's overrides, the model delivered (_deliver_model),
    restricted securityContext defaults (_harden), and the feedback-token keys (a (Secret, key)
    pair) mounted into it."""
    result = copy.deepcopy(template) if template else {}
    meta = result.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **labels(owner, workload)}
    meta["annotations"] = {
        **meta.get("annotations", {}),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    spec = result.setdefault("spec", {})
    containers = spec.setdefault("containers", [])
    if not containers:
        containers.append({"name": "server", "image": image, "args": ["serve"]})
    first = containers[0]
    ours = {e["name"] for e in _env(owner, workload, port)}
    first["env"] = [e for e in first.get("env", []) if e.get("name") not in ours] + _env(owner, workload, port)
    model_env = [e for e in _env(owner, workload, port) if e["name"] != "PORT"]
    for other in [*containers[1:], *spec.get("initContainers", [])]:
        other["env"] = [e for e in other.get("env", []) if e.get("name") not in ours] + copy.deepcopy(model_env)
    _override(spec, first, overrides)
    if not any(p.get("containerPort") == port for p in first.get("ports", [])):
        first["ports"] = [*first.get("ports", []), {"name": "http", "containerPort": port, "protocol": "TCP"}]
    first.setdefault("readinessProbe", {"httpGet": {"path": "/v2/health/ready", "port": port}, "periodSeconds": 5})
    first.setdefault("livenessProbe", {"httpGet": {"path": "/v2/health/live", "port": port}, "periodSeconds": 10})
    _harden(spec, first)
    _deliver_model(spec, first, workload.model_uri, workload.sha256, store or ModelStore(), image)
    if workload.paired is not None:
        _pair(spec, first, workload.paired, store or ModelStore(), image)
    if feedback_keys is not None:
        _mount_feedback_keys(spec, first, feedback_keys)
    return result


def deployment(owner: Owner, workload: TrackWorkload, template: dict[str, Any] | None, port: int,
               image: str = DEFAULT_IMAGE, set_replicas: bool = True,
               feedback_keys: tuple[str, str] | None = None, store: ModelStore | None = None,
               overrides: TrackSpec | None = None) -> dict[str, Any]:
    """A track's Deployment; without `set_replicas` (an HPA scales it) spec.replicas is left to others."""
    spec: dict[str, Any] = {"replicas": workload.replicas} if set_replicas else {}
    spec |= {
        "selector": {"matchLabels": selector(owner, workload.track)},
        "template": pod_template(owner, workload, template, port, image, feedback_keys, store, overrides),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, track_name(owner, workload.track), labels(owner, workload)),
        "spec": spec,
    }


def track_service(owner: Owner, workload: TrackWorkload, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, track_name(owner, workload.track), labels(owner, workload)),
        "spec": {
            "selector": selector(owner, workload.track),
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def front_service(owner: Owner, port: int) -> dict[str, Any]:
    """The model's stable address: every serving pod (stable and canary, never the shadow)."""
    front_labels = {**MANAGED_BY, "app.kubernetes.io/name": owner.model[:63], **selector(owner), "model": owner.model}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name, front_labels),
        "spec": {
            "selector": {**selector(owner), SERVING_LABEL: "true"},
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def autoscaler(owner: Owner, workload: TrackWorkload, autoscaling: Autoscaling) -> dict[str, Any]:
    """A track's HorizontalPodAutoscaler: once it exists the operator stops setting the Deployment's
    replicas, and the replica-ratio router weights by the replicas it chose."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, track_name(owner, workload.track), labels(owner, workload)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": track_name(owner, workload.track)},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": autoscaling.target_cpu}}}],
        },
    }


def disruption_budget(owner: Owner, workload: TrackWorkload) -> dict[str, Any]:
    """At most one pod of a multi-replica track evicted at a time (node drains, upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, track_name(owner, workload.track), labels(owner, workload)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(owner, workload.track)}},
    }
