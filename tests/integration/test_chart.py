"""The Helm chart lints, renders with default and full values, and every rendered object is valid.

helm itself: tests/helm.py.
"""

from __future__ import annotations

import filecmp
import json
import re
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import require_binary
from tests.helm import CHART, KUBE_VERSION, NAMESPACE, RELEASE, helm, template
from tests.integration.test_manifests import (
    EXPECTED_RULES,
    PEERING_RULES,
    assert_flags_accepted,
    assert_hardened,
    assert_ingress_only_to_named_ports,
    assert_least_privilege,
    find,
    operator_container,
    render_kustomize,
    validation_errors,
)
from tests.validation import CRD_DIR, ROOT

FULL_VALUES = CHART / "ci" / "full-values.yaml"

# Operator metrics (controller/metrics.py) and the model servers' metrics contract (docs/metrics.md).
OPERATOR_METRICS = {
    "modelwarden_operator_evaluations_total", "modelwarden_operator_check_value", "modelwarden_operator_drift_score",
    "modelwarden_operator_actions_total", "modelwarden_operator_notifications_total",
    "modelwarden_operator_evaluation_duration_seconds_bucket", "modelwarden_operator_canary_weight",
}
CONTRACT_METRICS = {
    "modelwarden_predictions_total", "modelwarden_prediction_errors_total", "modelwarden_inference_latency_seconds_bucket",
    "modelwarden_inference_latency_seconds_count", "modelwarden_feature_value_bucket", "modelwarden_prediction_value_bucket",
    "modelwarden_predicted_class_total", "modelwarden_feedback_total", "modelwarden_feedback_squared_error_sum",
    "modelwarden_feedback_absolute_error_sum", "modelwarden_feedback_observations_total", "modelwarden_prediction_outliers_total",
    "modelwarden_feedback_fourth_power_error_sum",
}
METRIC_NAME = re.compile(r"\bmodelwarden_[a-z_]+")


@pytest.fixture(scope="module")
def default():
    return template()


@pytest.fixture(scope="module")
def full():
    return template("-f", str(FULL_VALUES))


@pytest.fixture(params=["default", "full"])
def rendered(request, default, full):
    return default if request.param == "default" else full


# ---- lint and render ---------------------------------------------------------------------------

@pytest.mark.parametrize("values", [[], ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_helm_lint(values):
    result = helm("lint", str(CHART), "--strict", *values)
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_object_is_valid(rendered):
    assert not validation_errors(rendered)
    assert not [o for o in rendered if o["kind"] != "CustomResourceDefinition" and
                o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering") and
                not o["metadata"].get("namespace")], "every namespaced object names its namespace"


def test_default_values_render_the_base_install(default):
    kinds = sorted(o["kind"] for o in default)
    assert kinds == sorted(["CustomResourceDefinition"] * 4 + ["ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                                                "Service", "Deployment", "NetworkPolicy"])


def test_full_values_render_every_optional_object(full):
    kinds = {o["kind"] for o in full}
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "KopfPeering"} <= kinds
    # watchNamespaces: a KopfPeering per literal namespace (globs cannot have one).
    assert sorted(o["metadata"]["namespace"] for o in find(full, "KopfPeering")) == ["ml-prod", "ml-staging"]


def test_chart_crds_match_the_generated_crds():
    names = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    chart_names = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart_names == sorted([*names, "kopf-peering.kopf.dev.yaml"])
    _, mismatch, errors = filecmp.cmpfiles(CRD_DIR, CHART / "crds", names, shallow=False)
    assert not mismatch and not errors, f"charts/modelwarden/crds is stale ({mismatch or errors}): cp crds/*.yaml charts/modelwarden/crds/"
    kopf = (CHART / "crds" / "kopf-peering.kopf.dev.yaml").read_text()
    assert kopf.split("apiVersion", 1)[1] == (ROOT / "manifests" / "peering" / "kopf-peering-crds.yaml").read_text().split("apiVersion", 1)[1]


# ---- same operator as manifests/ ---------------------------------------------------------------

def test_rbac_matches_the_manifests(default, full):
    (role,) = find(default, "ClusterRole")
    assert_least_privilege(role, EXPECTED_RULES)
    roles = {r["metadata"]["name"]: r for r in find(full, "ClusterRole")}
    assert_least_privilege(roles["modelwarden"], EXPECTED_RULES)
    assert_least_privilege(roles["modelwarden-peering"], PEERING_RULES)
    (kustomize_role,) = find(render_kustomize(), "ClusterRole")
    assert role["rules"] == kustomize_role["rules"]
    for binding in find(full, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelwarden-operator", "namespace": NAMESPACE}]


def test_deployment_matches_the_manifests(default):
    (deployment,) = find(default, "Deployment")
    assert_hardened(deployment)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    chart, kustomize = operator_container(default), operator_container(render_kustomize())
    for key in ("args", "ports", "livenessProbe", "readinessProbe", "securityContext", "volumeMounts", "resources"):
        assert chart[key] == kustomize[key], key
    assert chart["image"] == kustomize["image"] == "ghcr.io/modelwarden/modelwarden:0.1.0"
    assert_flags_accepted(chart["args"])


def test_full_values_reach_the_deployment(full):
    (deployment,) = find(full, "Deployment")
    assert_hardened(deployment)
    container = operator_container(full)
    assert container["image"] == "registry.example.com/ml/modelwarden:0.1.0-rc1"
    assert container["args"] == [
        "run", "--namespace=ml-prod", "--namespace=ml-staging", "--namespace=team-*",
        "--prometheus-url=http://mimir-gateway.monitoring.svc:8080/prometheus",
        "--allowed-prometheus-urls=http://mimir-gateway.monitoring.svc:8080/prometheus,https://thanos.example.com",
        "--allowed-alert-hosts=hooks.slack.com,*.example.com",
        "--mlflow-tracking-uri=http://mlflow.mlops.svc:5000",
        "--allowed-registry-urls=http://mlflow.mlops.svc:5000,https://mlflow.example.com",
        "--liveness=http://0.0.0.0:8081/healthz", "--metrics-port=9102", "--metrics-address=::", "--log-format=json", "--verbose",
        "--peering=modelwarden-prod",
        "--pod-monitor-labels=release=kube-prometheus-stack,team=ml",
        "--default-image=registry.example.com/ml/modelwarden:0.1.0-rc1",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELWARDEN_RECONCILE_INTERVAL"] == "2.5" and env["HTTPS_PROXY"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (service,) = find(full, "Service")
    assert service["spec"]["ports"][0]["port"] == 9102
    assert_flags_accepted(container["args"])


def test_pod_monitors_can_be_turned_off_from_the_chart():
    args = operator_container(template("--set", "podMonitors.enabled=false"))["args"]
    assert "--pod-monitors=off" in args and not any(a.startswith("--pod-monitor-labels") for a in args)
    assert_flags_accepted(args)
    default_args = operator_container(template())["args"]
    assert not any(a.startswith("--pod-monitor") for a in default_args)  # auto, no extra labels


# ---- values.schema.json ------------------------------------------------------------------------

def test_values_files_satisfy_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for path in (CHART / "values.yaml", FULL_VALUES):
        jsonschema.Draft7Validator(schema).validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "override, message",
    [
        (["--set", "replicaCount=abc"], "replicaCount: Invalid type"),
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set-string", "metrics.port=9102"], "metrics.port: Invalid type"),
        (["--set", "logLevel=verbose"], "logLevel"),
        (["--set", "logFormat=yaml"], "logFormat"),
        (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
        (["--set", "watchNamespaces=ml-prod"], "watchNamespaces: Invalid type"),
        (["--set", "prometheusUrl=prometheus:9090"], "prometheusUrl"),
        (["--set", "prometheusRule.enabled=yes-please"], "prometheusRule.enabled: Invalid type"),
        (["--set", "reconcileInterval=0"], "reconcileInterval"),
        (["--set", "unknownKey=1"], "Additional property unknownKey is not allowed"),
    ],
    ids=lambda v: v if isinstance(v, str) else v[-1],
)
def test_schema_rejects_wrong_values(override, message):
    result = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, *override, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


# ---- monitoring: ServiceMonitor, PrometheusRule, dashboard -------------------------------------

def test_servicemonitor_scrapes_the_metrics_service(full):
    (monitor,) = find(full, "ServiceMonitor")
    (service,) = find(full, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"
    # The operator's series keep their own `namespace` (the policy's), not `exported_namespace`.
    assert endpoint["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def _promtool_check(groups: list[dict[str, Any]], tmp_path) -> None:
    promtool = require_binary("promtool")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rules_are_valid_promql_on_known_metrics(full, tmp_path):
    (rule,) = find(full, "PrometheusRule")
    groups = rule["spec"]["groups"]
    _promtool_check(groups, tmp_path)
    alerts = {r["alert"]: r for group in groups for r in group["rules"]}
    assert {"ModelwardenOperatorDown", "ModelwardenPolicyFailing", "ModelwardenCanaryStuck", "ModelwardenRollback"} <= set(alerts)
    assert 'job="modelwarden-metrics"' in alerts["ModelwardenOperatorDown"]["expr"]  # the metrics Service's name
    assert 'verdict="Fail"' in alerts["ModelwardenPolicyFailing"]["expr"]
    assert "modelwarden_operator_canary_weight" in alerts["ModelwardenCanaryStuck"]["expr"]
    for alert in alerts.values():
        assert set(METRIC_NAME.findall(alert["expr"])) <= OPERATOR_METRICS, alert["expr"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info") and alert["labels"]["team"] == "ml-platform"
        assert "{{ $labels" not in alert["annotations"]["summary"]


def test_grafana_dashboard(full, tmp_path):
    (configmap,) = find(full, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(configmap["data"]["modelwarden.json"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("drift score per feature", "accuracy by track", "canary weight", "actions over time"):
        assert topic in titles
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used <= OPERATOR_METRICS | CONTRACT_METRICS, used - OPERATOR_METRICS - CONTRACT_METRICS
    assert {"modelwarden_operator_drift_score", "modelwarden_operator_canary_weight", "modelwarden_operator_actions_total",
            "modelwarden_feedback_total"} <= used
    # Every query parses: substitute the dashboard's variables and let promtool check them as recording rules.
    substitute = {"$__rate_interval": "5m", "$window": "30m", "$namespace": ".*", "$policy": ".*", "$model": ".*"}
    rules = []
    for index, expr in enumerate(exprs):
        for variable, value in substitute.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr.replace("$1", ""), expr
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    _promtool_check([{"name": "dashboard", "rules": rules}], tmp_path)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "policy", "model", "window"} <= variables


# ---- network exposure --------------------------------------------------------------------------

def test_network_policy_matches_the_manifests_by_default(default):
    (policy,) = find(default, "NetworkPolicy")
    (deployment,) = find(default, "Deployment")
    assert_ingress_only_to_named_ports(policy, deployment)
    (kustomize_policy,) = find(render_kustomize(), "NetworkPolicy")
    assert policy["spec"]["ingress"] == kustomize_policy["spec"]["ingress"]
    assert policy["metadata"]["namespace"] == NAMESPACE


def test_network_policy_sources_come_from_values(full):
    (policy,) = find(full, "NetworkPolicy")
    assert_ingress_only_to_named_ports(policy, find(full, "Deployment")[0])
    metrics, health = policy["spec"]["ingress"]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}] and len(metrics["from"]) == 2
    assert metrics["from"][1] == {"ipBlock": {"cidr": "10.20.0.0/16"}}
    assert health["ports"] == [{"port": "healthz", "protocol": "TCP"}]
    assert health["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "uptime"}}}]


def test_network_policy_with_no_sources_admits_nobody_and_can_be_turned_off(tmp_path):
    closed = tmp_path / "closed.yaml"
    closed.write_text("networkPolicy: {metricsFrom: [], healthFrom: []}\n")
    (policy,) = find(template("-f", str(closed)), "NetworkPolicy")
    assert policy["spec"]["ingress"] == [] and policy["spec"]["policyTypes"] == ["Ingress"]
    assert not find(template("--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_bind_addresses_come_from_values():
    args = operator_container(template("--set", "livenessAddress=::", "--set", "metrics.address=127.0.0.1"))["args"]
    assert "--liveness=http://[::]:8081/healthz" in args and "--metrics-address=127.0.0.1" in args
    assert_flags_accepted(args)
    rejected = helm("template", RELEASE, str(CHART), "--set", "metrics.address=metrics.example.com", check=False)
    assert rejected.returncode != 0 and "address" in rejected.stderr
