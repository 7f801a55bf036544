"""Model pods run restricted by default (Pod Security Standards "restricted" plus a read-only root
with /tmp writable), a template can override any single setting, and the result stays a valid
apps/v1 Deployment."""

from __future__ import annotations

import pytest

from modelwarden.builders.workloads import Owner, TrackWorkload, deployment
from tests.validation import validate_any

OWNER = Owner(name="fraud", namespace="ml", uid="uid-1", model="fraud")
STABLE = TrackWorkload(track="stable", version="7", model_uri="file:///models/7", replicas=2, serving=True)


def pod(template=None, feedback_keys=None) -> dict:
    return deployment(OWNER, STABLE, template, 8080, feedback_keys=feedback_keys)["spec"]["template"]["spec"]


def mounts(container: dict) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def assert_restricted(spec: dict) -> None:
    """What the restricted Pod Security Standard asks of the model-server container, and a read-only root."""
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    server = spec["containers"][0]["securityContext"]
    assert server["allowPrivilegeEscalation"] is False
    assert server["capabilities"] == {"drop": ["ALL"]}
    assert server["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts(spec["containers"][0])["/tmp"]]


def test_default_pod_is_restricted_with_a_writable_tmp():
    spec = pod()
    assert_restricted(spec)
    assert validate_any(deployment(OWNER, STABLE, None, 8080)) == []


def test_user_template_is_hardened_too_and_keeps_its_own_volumes():
    template = {"spec": {"containers": [{"name": "server", "image": "ghcr.io/example/serve:1",
                                         "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
                         "volumes": [{"name": "cache", "emptyDir": {}}]}}
    spec = pod(template, feedback_keys=("fraud-feedback", "keys"))
    assert_restricted(spec)
    assert set(mounts(spec["containers"][0])) == {"/cache", "/tmp", "/var/run/modelwarden/feedback"}
    assert template["spec"]["volumes"] == [{"name": "cache", "emptyDir": {}}], "the caller's template is not mutated"
    assert validate_any(deployment(OWNER, STABLE, template, 8080, feedback_keys=("fraud-feedback", "keys"))) == []


def test_template_settings_win_key_by_key():
    """An image that must run as root, or keep its capabilities, says so in the template; every
    other default still applies."""
    template = {"spec": {"securityContext": {"runAsNonRoot": False, "runAsUser": 0, "fsGroup": 2000},
                         "containers": [{"name": "server", "image": "legacy:1",
                                         "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                                             "readOnlyRootFilesystem": False}}]}}
    spec = pod(template)
    assert spec["securityContext"] == {"runAsNonRoot": False, "runAsUser": 0, "fsGroup": 2000,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False,
                                                        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}
    assert "/tmp" not in mounts(spec["containers"][0]) and "volumes" not in spec, "a writable root needs no /tmp volume"
    assert validate_any(deployment(OWNER, STABLE, template, 8080)) == []


def test_a_template_that_mounts_tmp_itself_keeps_its_mount():
    template = {"spec": {"containers": [{"name": "server", "image": "serve:1",
                                         "volumeMounts": [{"name": "scratch", "mountPath": "/tmp/"}]}],
                         "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]}}
    spec = pod(template)
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "scratch", "mountPath": "/tmp/"}]


def test_only_the_model_server_container_gets_container_defaults():
    """Sidecars are the template author's (the pod-level runAsNonRoot and seccomp still cover them)."""
    template = {"spec": {"containers": [{"name": "server", "image": "serve:1"}, {"name": "proxy", "image": "envoy:1"}]}}
    spec = pod(template)
    assert "securityContext" not in spec["containers"][1] and "volumeMounts" not in spec["containers"][1]
    assert_restricted(spec)


@pytest.mark.parametrize("track, serving", [("canary", True), ("shadow", False)])
def test_every_track_is_restricted(track, serving):
    workload = TrackWorkload(track=track, version="8", model_uri="file:///models/8", replicas=1, serving=serving)
    assert_restricted(deployment(OWNER, workload, None, 8080)["spec"]["template"]["spec"])
