"""The Argo CD health checks shipped for both CRDs (manifests/argocd/health/, the same text in
docs/gitops.md and the chart's README), run with a real Lua 5.1 (Argo CD's gopher-lua speaks 5.1)
on statuses the operator's own planning code produced."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from lupa.lua51 import LuaRuntime

from modelwarden.api.driftpolicy import DriftPolicyStatus
from modelwarden.controller.status import spec_status_patch
from modelwarden.planning import tick
from tests.unit.test_day2_requests import asking
from tests.unit.test_plan import ALL_READY, BASE, MIN, T0, applied, md, ready, step, verdict
from tests.unit.test_policy_decisions import E, F, I, P, ctx, evaluation
from tests.validation import ROOT

HEALTH = ROOT / "manifests" / "argocd" / "health" / "modelwarden.io"
SCRIPTS = {kind: (HEALTH / kind / "health.lua").read_text() for kind in ("ModelDeployment", "DriftPolicy")}


def health(kind: str, obj: dict) -> tuple[str, str]:
    """What Argo CD would show: the script's hs.status and hs.message, with `obj` a Lua table."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    hs = lua.execute(SCRIPTS[kind])
    return hs["status"], hs["message"] or ""


def mdep(status: dict | None, generation: int = 1) -> dict:
    body = copy.deepcopy(BASE)
    body["metadata"]["generation"] = generation
    if status is not None:
        body["status"] = status
    return body


def modeldeployment_samples() -> dict[str, tuple[dict, str, str]]:
    """(object, expected health, a word the message must hold), each status made by plan()."""
    first, current = step(md())
    stable_only, _ = step(md(canary=None), {"stable": ready("7", 3)})
    split, _ = step(md(canary={"version": "8", "modelUri": "s3://models/8", "weight": 20}), ALL_READY)
    aborted, after = step(current, ALL_READY, [verdict(result="Fail", at=T0 + MIN, failures=3)], now=T0 + 2 * MIN)
    dropped, _ = step(md(status=after.status.to_wire(), canary=None), {"stable": ready("7", 3)}, now=T0 + 3 * MIN)
    deadline = {**BASE["spec"]["canary"], "progressDeadline": "20m"}
    stalled, _ = step(applied(step(md(canary=deadline))[1]), ALL_READY, [verdict(result="InsufficientData", at=T0 + 25 * MIN)],
                      now=T0 + 30 * MIN)
    _, serving = step(md(canary=None), {"stable": ready("7", 3)})
    lost, _ = step(serving, {"stable": dataclasses.replace(ready("7", 3), ready_replicas=1)}, now=T0 + MIN)
    moved = md(status=serving.status.to_wire(), canary=None, stable={"version": "9", "modelUri": "s3://models/9", "replicas": 3})
    _, serving9 = step(moved, {"stable": ready("9", 3)}, now=T0 + MIN)
    reverted, _ = step(serving9, {"stable": ready("9", 3)}, [verdict(track="stable", result="Fail", at=T0 + 2 * MIN, failures=3,
                                                                      version="9")], now=T0 + 3 * MIN)
    paused, _ = step(asking(current, paused="true"), ALL_READY, now=T0 + MIN)
    approval = [{"weight": 10, "pause": "10m", "approval": "required"}, {"weight": 50, "pause": "10m"}]
    awaiting, _ = step(applied(step(md(canary={**BASE["spec"]["canary"], "steps": approval}))[1]), ALL_READY,
                       [verdict(at=T0 + 5 * MIN)], now=T0 + 11 * MIN)
    invalid = spec_status_patch({}, 1, "spec.canary.steps[0].weight: must be at most 100", T0, "Failed")
    return {
        "new": (mdep(None), "Progressing", "Waiting"),
        "generation ahead": (mdep(stable_only.status, generation=2), "Progressing", "generation 2"),
        "canary stepping": (mdep(first.status), "Progressing", "step 1/2"),
        "stable, all ready": (mdep(stable_only.status), "Healthy", "serving 7"),
        "fixed A/B split": (mdep(split.status), "Healthy", "A/B split"),
        "canary rolled back": (mdep(aborted.status), "Degraded", "RolledBack"),
        "rolled-back canary dropped from the spec": (mdep(dropped.status), "Healthy", "rolled back"),
        "step past its deadline": (mdep(stalled.status), "Degraded", "ProgressDeadlineExceeded"),
        "a track lost readiness": (mdep(lost.status), "Degraded", "not ready: stable"),
        "stable reverted": (mdep(reverted.status), "Degraded", "stable 9 rolled back"),
        "invalid spec": (mdep(invalid), "Degraded", "must be at most 100"),
        "paused by a person": (mdep(paused.status), "Suspended", "PauseRequested"),
        "a step awaiting approval": (mdep(awaiting.status), "Suspended", "AwaitingApproval"),
    }


def driftpolicy_samples() -> dict[str, tuple[dict, str, str]]:
    def after(verdicts, context=None, found=True) -> dict:
        context, status = context or ctx(), DriftPolicyStatus()
        for i, result in enumerate(verdicts or [None]):
            now = T0 + i * MIN
            seen = tick.Observations(target_found=found, evaluation=evaluation(result, now) if result else None)
            status = tick.decide_tick(context, status, seen, now).status
        return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": "gate", "generation": 1},
                "spec": {}, "status": json.loads(json.dumps(status.to_wire(), default=str))}

    return {
        "not evaluated yet": ({"metadata": {"name": "gate", "generation": 1}}, "Progressing", "first evaluation"),
        "passing": (after([P]), "Healthy", "Passing"),
        "failing below the threshold": (after([F]), "Degraded", "Failing"),
        "breached": (after([F, F]), "Degraded", "Failing"),
        "too few samples": (after([I]), "Progressing", "InsufficientData"),
        "query failed": (after([E]), "Degraded", "Error"),
        "suspended": (after([None], ctx(suspend=True)), "Suspended", "spec.suspend"),
        "target missing": (after([None], found=False), "Degraded", "not found"),
    }


@pytest.mark.parametrize("name, sample", modeldeployment_samples().items())
def test_modeldeployment_health(name, sample):
    obj, expected, word = sample
    status, message = health("ModelDeployment", obj)
    assert (status, word in message) == (expected, True), (name, status, message, obj.get("status"))


@pytest.mark.parametrize("name, sample", driftpolicy_samples().items())
def test_driftpolicy_health(name, sample):
    obj, expected, word = sample
    status, message = health("DriftPolicy", obj)
    assert (status, word in message) == (expected, True), (name, status, message, obj.get("status"))


def test_every_argo_health_status_is_covered():
    seen = {expected for samples in (modeldeployment_samples(), driftpolicy_samples()) for _, expected, _ in samples.values()}
    assert seen == {"Progressing", "Healthy", "Degraded", "Suspended"}


@pytest.mark.parametrize("doc", ["docs/gitops.md", "charts/modelwarden/README.md"])
def test_the_shipped_snippets_are_the_tested_scripts(doc):
    """argocd-cm's resource.customizations in the docs hold exactly the scripts tested here."""
    import yaml

    text = (ROOT / doc).read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(block)
    customizations = config["data"]
    for kind, script in SCRIPTS.items():
        assert customizations[f"resource.customizations.health.modelwarden.io_{kind}"] == script, (doc, kind)
