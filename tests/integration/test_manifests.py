"""manifests/ renders offline with kustomize, every object is valid, and the RBAC is least privilege.

Also the shared expectations for the Helm chart (tests/integration/test_chart.py imports them): the exact
RBAC rules, the validation of a rendered object set, and the operator container's hardening.
"""

from __future__ import annotations

import filecmp
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary
from tests.validation import CRD_DIR, ROOT, schema_errors, validate_any

MANIFESTS = ROOT / "manifests"
NAMESPACE = "modelwarden-system"
LIVENESS_PORT, METRICS_PORT = 8081, 8082

RWD = ["get", "list", "watch", "create", "patch", "delete"]
# The operator's permissions, exactly (docs/operations.md "RBAC" explains each line).
EXPECTED_RULES: list[tuple[str, tuple[str, ...], list[str]]] = [
    ("modelwarden.io", ("modeldeployments", "driftpolicies"), ["get", "list", "watch", "patch"]),
    ("modelwarden.io", ("modeldeployments/status", "driftpolicies/status"), ["get", "patch", "update"]),
    ("apps", ("deployments",), RWD),
    ("", ("services",), RWD),
    ("gateway.networking.k8s.io", ("httproutes",), RWD),
    ("networking.istio.io", ("virtualservices",), RWD),
    ("monitoring.coreos.com", ("podmonitors",), RWD),
    ("autoscaling", ("horizontalpodautoscalers",), ["get", "list", "watch", "create", "patch", "delete"]),
    ("policy", ("poddisruptionbudgets",), ["get", "list", "watch", "create", "patch", "delete"]),
    ("", ("pods",), ["list"]),
    ("batch", ("jobs", "cronjobs"), RWD),
    ("argoproj.io", ("workflows",), ["get", "list", "create"]),
    ("", ("events",), ["create", "patch"]),
    ("events.k8s.io", ("events",), ["create", "patch"]),
    ("", ("configmaps",), ["get"]),
    ("", ("secrets",), ["get"]),
    ("", ("namespaces",), ["get", "list", "watch"]),
    ("apiextensions.k8s.io", ("customresourcedefinitions",), ["get", "list", "watch"]),
]
PEERING_RULES = [("kopf.dev", ("clusterkopfpeerings", "kopfpeerings"), ["get", "list", "watch", "patch"])]


# ---- helpers shared with test_chart.py ---------------------------------------------------------

def render_kustomize(path=MANIFESTS) -> list[dict[str, Any]]:
    kubectl = require_binary("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def validation_errors(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Validate every object: built-ins with kubernetes-validate, our CRs and third-party CRs
    (ServiceMonitor, PrometheusRule) against their CRD schemas, and CRs of CRDs rendered alongside
    (kopf's peering objects) against those CRDs."""
    rendered_crds = {}
    for crd in find(objects, "CustomResourceDefinition"):
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            rendered_crds[key] = version["schema"]["openAPIV3Schema"]
    errors = {}
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in rendered_crds and not key[0].startswith("modelwarden.io/"):
            problems = schema_errors(rendered_crds[key], obj)
        else:
            problems = validate_any(obj)
        if problems:
            errors[f"{obj['kind']}/{obj['metadata'].get('name')}"] = problems
    return errors


def rules_of(role: dict[str, Any]) -> list[tuple[str, tuple[str, ...], list[str]]]:
    return [(g, tuple(rule["resources"]), rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]]


def assert_least_privilege(role: dict[str, Any], expected) -> None:
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {rule}"
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
    assert rules_of(role) == expected


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in find(objects, "Deployment")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def operator_container_args(objects: list[dict[str, Any]]) -> list[str]:
    return operator_container(objects)["args"]


def assert_hardened(deployment: dict[str, Any], liveness_port: int = LIVENESS_PORT) -> None:
    """The pod runs non-root on a read-only root filesystem with no capabilities; /tmp is an emptyDir."""
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # Probes hit the endpoint `--liveness` serves.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--liveness=http://0.0.0.0:{liveness_port}/healthz" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and ports[get["port"]] == liveness_port
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["args"][0] == "run"


def assert_flags_accepted(args: list[str]) -> None:
    """Every flag passed to `modelwarden run` exists in its parser (the image's ENTRYPOINT is modelwarden)."""
    from modelwarden.cli import build_parser

    parser = build_parser("run")
    known = {opt for action in parser._subparsers._group_actions[0].choices["run"]._actions for opt in action.option_strings}
    flags = [arg.split("=")[0] for arg in args if arg.startswith("-")]
    missing = [flag for flag in flags if flag not in known]
    assert not missing, f"`modelwarden run` does not accept {missing}"
    parser.parse_args(args)  # and the values parse (types, mutually exclusive -A/-n)


# ---- the kustomize base ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base():
    return render_kustomize()


@pytest.fixture(scope="module")
def peering():
    return render_kustomize(MANIFESTS / "peering")


def test_crd_copies_match_the_generated_crds():
    names = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    copies = sorted(p.name for p in (MANIFESTS / "base" / "crds").glob("*.yaml"))
    assert copies == names
    _, mismatch, errors = filecmp.cmpfiles(CRD_DIR, MANIFESTS / "base" / "crds", names, shallow=False)
    assert not mismatch and not errors, (
        f"manifests/base/crds is stale ({mismatch or errors}): cp crds/*.yaml manifests/base/crds/"
    )


def test_kustomize_renders_the_expected_objects(base):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in base)
    assert kinds == sorted([
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "modeldeployments.modelwarden.io"),
        ("CustomResourceDefinition", "driftpolicies.modelwarden.io"),
        ("ServiceAccount", "modelwarden"),
        ("ClusterRole", "modelwarden"),
        ("ClusterRoleBinding", "modelwarden"),
        ("Deployment", "modelwarden"),
        ("Service", "modelwarden-metrics"),
        ("NetworkPolicy", "modelwarden"),
    ])
    for obj in base:
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service", "NetworkPolicy"):
            assert obj["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("overlay", ["base", "peering"])
def test_every_rendered_object_is_valid(overlay, base, peering):
    objects = base if overlay == "base" else peering
    assert not validation_errors(objects)


def test_rbac_is_least_privilege(base):
    (role,) = find(base, "ClusterRole")
    assert_least_privilege(role, EXPECTED_RULES)
    secrets = [verbs for group, resources, verbs in rules_of(role) if "secrets" in resources]
    assert secrets == [["get"]], "Secrets are read by name: no list/watch"
    (binding,) = find(base, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (deployment,) = find(base, "Deployment")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
                                    "namespace": NAMESPACE}]


def test_operator_deployment_is_hardened_and_standalone(base):
    (deployment,) = find(base, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "never two standalone operators at once"
    assert_hardened(deployment)
    args = operator_container_args(base)
    assert args[:2] == ["run", "-A"]
    assert f"--metrics-port={METRICS_PORT}" in args
    assert any(a.startswith("--prometheus-url=http") for a in args)


def test_operator_flags_exist():
    assert_flags_accepted(operator_container_args(render_kustomize()))


def test_metrics_service_targets_the_metrics_port(base):
    (service,) = find(base, "Service")
    (deployment,) = find(base, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in operator_container(base)["ports"]}
    assert port["port"] == METRICS_PORT and container_ports[port["targetPort"]] == METRICS_PORT


def test_peering_overlay(peering, base):
    args = operator_container_args(peering)
    assert "--peering=modelwarden" in args
    (deployment,) = find(peering, "Deployment")
    assert deployment["spec"]["replicas"] == 1, "kopf pauses every operator of equal priority"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert find(peering, "ClusterKopfPeering", "modelwarden")
    roles = {r["metadata"]["name"]: r for r in find(peering, "ClusterRole")}
    assert_least_privilege(roles["modelwarden-peering"], PEERING_RULES)
    assert_least_privilege(roles["modelwarden"], EXPECTED_RULES)
    # Everything else is the base, unchanged.
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    unchanged = {key(o): o for o in peering if o["kind"] not in ("Deployment",)}
    for obj in base:
        if obj["kind"] != "Deployment":
            assert unchanged[key(obj)] == obj


def assert_ingress_only_to_named_ports(policy: dict[str, Any], deployment: dict[str, Any]) -> None:
    """The NetworkPolicy selects the operator pod, limits ingress only, and every rule names a port
    the operator container declares and has a non-empty `from` (an empty one admits everyone)."""
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    declared = {p["name"] for p in container["ports"]}
    for rule in policy["spec"]["ingress"]:
        assert rule["from"], f"empty from admits every source: {rule}"
        assert {p["port"] for p in rule["ports"]} <= declared


def test_network_policy_admits_only_monitoring_to_the_metrics_port(base):
    (policy,) = find(base, "NetworkPolicy")
    (deployment,) = find(base, "Deployment")
    assert_ingress_only_to_named_ports(policy, deployment)
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}]
    assert "--metrics-address=0.0.0.0" in operator_container_args(base)
