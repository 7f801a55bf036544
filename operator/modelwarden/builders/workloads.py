"""Pure builders for the children of a ModelDeployment: per-track Deployments and Services and a
front Service for the model as a whole."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from modelwarden.contract import environment
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
class TrackWorkload:
    """What one track runs."""

    track: str
    version: str
    model_uri: str
    replicas: int
    serving: bool  # receives user traffic through the front Service (stable, canary); a shadow does not


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


def pod_template(owner: Owner, workload: TrackWorkload, template: dict[str, Any] | None, port: int,
                 image: str = DEFAULT_IMAGE, feedback_keys: tuple[str, str] | None = None) -> dict[str, Any]:
    """The user's pod template with our labels, scrape annotations and MODEL_* env on its first
    container, restricted securityContext defaults (_harden), and the feedback-token keys (a
    (Secret, key) pair) mounted into it."""
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
    if not any(p.get("containerPort") == port for p in first.get("ports", [])):
        first["ports"] = [*first.get("ports", []), {"name": "http", "containerPort": port, "protocol": "TCP"}]
    first.setdefault("readinessProbe", {"httpGet": {"path": "/v2/health/ready", "port": port}, "periodSeconds": 5})
    first.setdefault("livenessProbe", {"httpGet": {"path": "/v2/health/live", "port": port}, "periodSeconds": 10})
    _harden(spec, first)
    if feedback_keys is not None:
        _mount_feedback_keys(spec, first, feedback_keys)
    return result


def deployment(owner: Owner, workload: TrackWorkload, template: dict[str, Any] | None, port: int,
               image: str = DEFAULT_IMAGE, set_replicas: bool = True,
               feedback_keys: tuple[str, str] | None = None) -> dict[str, Any]:
    """A track's Deployment; without `set_replicas` (an HPA scales it) spec.replicas is left to others."""
    spec: dict[str, Any] = {"replicas": workload.replicas} if set_replicas else {}
    spec |= {
        "selector": {"matchLabels": selector(owner, workload.track)},
        "template": pod_template(owner, workload, template, port, image, feedback_keys),
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
