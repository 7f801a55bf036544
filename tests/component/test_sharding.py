"""Two operator processes, `--shard 0/2` and `--shard 1/2`, on one real control plane: every
ModelDeployment and DriftPolicy is driven by exactly one of them, and together they drive all."""

from __future__ import annotations

import re

import requests

from modelwarden.controller.config import shard_of
from tests.processes import free_port

FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "0.5", "MODELWARDEN_POLICY_TICK": "0.2"}
N = 8
DECIDED = re.compile(r"(\S+)/(\S+) decided \(")
EVALUATED = re.compile(r'^modelwarden_operator_evaluations_total\{[^}]*policy="([^"]+)"[^}]*\} (\S+)$', re.M)


def modeldeployment(name: str) -> dict:
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"model": name, "stable": {"version": "1", "modelUri": f"file:///m/{name}"}, "traffic": {"router": "replicas"}}}


def policy(name: str) -> dict:
    # Its Prometheus does not answer: every evaluation is an Error, counted by the operator that ran it.
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": "default"},
            "spec": {"targetRef": {"name": name}, "interval": "1s", "window": "1m",
                     "checks": [{"name": "errors", "query": "sum(errors{ {{ selector }} })", "max": 1}],
                     "prometheus": {"url": "http://127.0.0.1:9", "timeout": "1s"}}}


def test_two_shards_never_both_act_on_one_object(kube, kubelet, operator_factory):
    ports = [free_port(), free_port()]
    operators = [operator_factory("-A", "--shard", f"{i}/2", "--metrics-port", str(ports[i]), env=FAST) for i in range(2)]
    names = [f"m{i}" for i in range(N)]
    for name in names:
        kube.create("modeldeployments", modeldeployment(name))
        kube.create("driftpolicies", policy(name))
    for name in names:
        kube.wait_for("modeldeployments", name, lambda o: (o.get("status") or {}).get("phase") == "Stable", timeout=120)
        kube.wait_for("driftpolicies", name, lambda o: (o.get("status") or {}).get("lastEvaluation"), timeout=120)

    uids = {plural: {o["metadata"]["name"]: o["metadata"]["uid"] for o in kube.list(plural)}
            for plural in ("modeldeployments", "driftpolicies")}
    decided = [{m.group(2) for m in DECIDED.finditer(operator.log())} for operator in operators]
    evaluated = [{policy_name for policy_name, value in EVALUATED.findall(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
                  if float(value) > 0} for port in ports]
    for shard in (0, 1):
        # Each process drove exactly the objects of its own shard ...
        assert decided[shard] == {n for n in names if shard_of(uids["modeldeployments"][n], 2) == shard}, (shard, decided)
        assert evaluated[shard] == {n for n in names if shard_of(uids["driftpolicies"][n], 2) == shard}, (shard, evaluated)
    # ... so no object was driven by both, and none by neither.
    assert decided[0].isdisjoint(decided[1]) and decided[0] | decided[1] == set(names)
    assert evaluated[0].isdisjoint(evaluated[1]) and evaluated[0] | evaluated[1] == set(names)


def test_two_label_shards_each_drive_only_their_own_objects(kube, kubelet, operator_factory):
    ports = [free_port(), free_port()]
    operators = [operator_factory("-A", "--selector", f"shard={team}", "--metrics-port", str(ports[i]), env=FAST)
                 for i, team in enumerate("ab")]
    names = [f"m{i}" for i in range(N)]
    team_of = {name: "ab"[i % 2] for i, name in enumerate(names)}
    for name in names:
        for plural, body in (("modeldeployments", modeldeployment(name)), ("driftpolicies", policy(name))):
            body["metadata"]["labels"] = {"shard": team_of[name]}
            kube.create(plural, body)
    unlabelled = modeldeployment("nobody")  # matches neither selector: neither process touches it
    kube.create("modeldeployments", unlabelled)
    for name in names:
        kube.wait_for("modeldeployments", name, lambda o: (o.get("status") or {}).get("phase") == "Stable", timeout=120)
        kube.wait_for("driftpolicies", name, lambda o: (o.get("status") or {}).get("lastEvaluation"), timeout=120)

    decided = [{m.group(2) for m in DECIDED.finditer(operator.log())} for operator in operators]
    evaluated = [{policy_name for policy_name, value in EVALUATED.findall(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
                  if float(value) > 0} for port in ports]
    for i, team in enumerate("ab"):
        assert decided[i] == {n for n in names if team_of[n] == team}, (team, decided)
        assert evaluated[i] == {n for n in names if team_of[n] == team}, (team, evaluated)
    assert not (kube.get("modeldeployments", "nobody").get("status") or {}).get("phase")
