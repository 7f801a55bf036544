"""The contention tier: the real operator (as the chart's ServiceAccount) behind an API proxy in
front of a real control plane that delays every call 0.3-2 s,
delays and reorders watch events, and answers 5 % of writes with 409 and 10 % of calls with 500,
while two busy loops starve the CPU. Promotion, canary-abort and stable-rollback run side by side
(RUNS of each, default 20) and every assertion is an order or a count, never a duration:

- no reverted promotion: a ModelDeployment's served stable version and its stable Deployment's
  MODEL_URI never go back (recorded from the API server's own watch);
- no step advanced while the gate fails; exactly one abort/rollback per ModelDeployment, acted on
  the threshold's evaluation or the one after it (no more evaluations in between);
- exactly one retraining Job per breach;
- every DriftPolicy's `status.looks` (the looks its error budget was spent over) grows by exactly
  one per persisted evaluation that judged something: none counted twice, none lost.
"""

from __future__ import annotations

import collections
import json
import os
import re
import ssl
import threading

import pytest
import requests

from tests.contention import CpuBurners, FaultyApiProxy
from tests.realcluster import PodKubelet

RUNS = int(os.environ.get("MODELWARDEN_CONTENTION_RUNS", "20"))
# About 5 minutes on this 2-core machine, longer when it is busy: its own bound, not the suite's 300 s.
pytestmark = pytest.mark.timeout(1800)
FAST = {"MODELWARDEN_RECONCILE_INTERVAL": "2", "MODELWARDEN_POLICY_TICK": "0.5"}
THRESHOLD = 2
TRAINER = {"template": {"spec": {"containers": [{"name": "train", "image": "trainer:1"}]}}}


def modeldeployment(namespace: str, name: str, canary: bool) -> dict:
    spec = {"model": name, "stable": {"version": "1", "modelUri": f"file:///m/{name}/1"}, "traffic": {"router": "istio"}}
    if canary:
        spec["canary"] = {"version": "2", "modelUri": f"file:///m/{name}/2",
                          "steps": [{"weight": 20, "pause": "1s"}, {"weight": 60, "pause": "1s"}]}
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def policy(namespace: str, name: str, track: str, url: str, retrain: bool) -> dict:
    actions: dict = {"rollback": True}
    if retrain:
        actions["retrain"] = {"jobTemplate": TRAINER, "cooldown": "1h"}
    return {"apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": namespace},
            "spec": {"targetRef": {"name": name}, "track": track, "interval": "1s", "window": "1s", "minSamples": 1,
                     "failureThreshold": THRESHOLD, "checks": [{"name": "errors", "query": 'sum(errors{ {{ selector }} })', "max": 1}],
                     "prometheus": {"url": url, "timeout": "1s"}, "actions": actions}}


class WatchRecorder:
    """Every event of some kinds, straight from the API server (not through the proxy), in order.

    A watch the server ends (or answers with an error) is resumed from the last resourceVersion
    seen, so no event is lost; ``gaps`` counts the times that was impossible (410 Gone: the
    history was compacted) and the watch had to start over from the current state."""

    def __init__(self, url: str, paths: dict[str, str], session_factory) -> None:
        self.url, self.paths, self.session_factory = url, paths, session_factory
        self.events: dict[str, list[dict]] = collections.defaultdict(list)
        self.gaps = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(kind, path), daemon=True) for kind, path in paths.items()]

    def _watch(self, kind: str, path: str) -> None:
        session = self.session_factory()  # one per thread
        version = None
        while not self._stop.is_set():
            params = {"watch": "true"} | ({"resourceVersion": version} if version else {})
            try:
                with session.get(f"{self.url}{path}", params=params, stream=True, timeout=(5, 3600)) as response:
                    if response.status_code not in (200, 410):
                        self.errors.append(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
                        self._stop.wait(0.5)
                        continue
                    if response.status_code == 410:  # the version was compacted: start over, events lost
                        version = None
                        self.gaps += 1
                        continue
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        if not line:
                            continue
                        try:
                            event = json.loads(line)
                            if event["type"] == "ERROR":
                                # 410: the version was compacted, events lost. Anything else (e.g. the
                                # watch cache behind: "Too large resource version") is retried from
                                # the same version, nothing lost.
                                if event["object"].get("code") == 410:
                                    version = None
                                    self.gaps += 1
                                self.errors.append(f"{kind}: {event['object'].get('message')}")
                                self._stop.wait(0.2)
                                break
                            event["object"]["metadata"]["resourceVersion"]
                        except (ValueError, KeyError, TypeError, AttributeError):  # not an event: nothing can be trusted after it
                            self.errors.append(f"{kind}: not a watch event: {line[:200]!r}")
                            version = None
                            self.gaps += 1
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            with self._lock:
                                self.events[kind].append(event["object"])
            except requests.RequestException as error:
                self.errors.append(f"{kind}: {error}")
                continue

    def start(self) -> "WatchRecorder":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def objects(self, kind: str, namespace: str, name: str) -> list[dict]:
        with self._lock:
            return [o for o in self.events[kind] if o["metadata"].get("namespace") == namespace and o["metadata"]["name"] == name]


def looks_trail(policies: list[dict]) -> list[tuple[str | None, str, int, int]]:
    """(evaluatedVersion, lastEvaluation.time, looks, whether it judged) of each persisted
    evaluation of a DriftPolicy in the order the API server stored them; one evaluation stored
    with two different counts of looks is an error at once."""
    trail: list[tuple[str | None, str, int, int]] = []
    for status in (p.get("status") or {} for p in policies):
        evaluation = status.get("lastEvaluation")
        if not evaluation:
            continue
        judged = int(any(r["verdict"] in ("Pass", "Warning", "Fail") for r in evaluation.get("results", [])))
        entry = (status.get("evaluatedVersion"), evaluation["time"], status.get("looks", 0), judged)
        if trail and trail[-1][1] == entry[1]:
            assert trail[-1] == entry, ("one evaluation, two counts of looks", trail[-1], entry)
            continue
        trail.append(entry)
    return trail


def model_uri(deployment: dict) -> str:
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e["value"] for e in env if e["name"] == "MODEL_URI")


def changes(values: list) -> list:
    """A sequence with repeats collapsed: the transitions."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


DECISION = re.compile(r"(\S+)/(\S+) decided \((\w+)\): (.*?); verdicts: (.*)$")


def decisions_by_object(log: str) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
    """(outcome, events, verdicts) of every decision in the operator's own log, per ModelDeployment, in order."""
    found: dict[tuple[str, str], list[tuple[str, str, str]]] = collections.defaultdict(list)
    for line in log.splitlines():
        if " decided (" in line and (m := DECISION.search(line)):
            found[(m.group(1), m.group(2))].append(m.group(3, 4, 5))
    return found


def acted_on_first_breach(decisions: dict, namespace: str, name: str, action: str) -> bool:
    """The first decision that counted the policy's verdict as a breach (marked `!`: enough failing
    evaluations, all about what serves now) took `action`; a decision the API server refused as
    stale (409) was made again, so it does not count. Returns True, or raises with the decisions seen."""
    seen = decisions.get((namespace, name), [])
    for outcome, events, verdicts in seen:
        if re.search(rf"{name}@\S+=Fail \d+/\d+!", verdicts) and outcome != "refused":
            assert action in events, (namespace, name, outcome, events, verdicts, seen[-20:])
            return True
    raise AssertionError((namespace, name, "no decision saw the breach", seen[-20:]))


def reconcile_outcomes(port: int) -> dict[str, int]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(r'^modelwarden_operator_reconciles_total\{outcome="(\w+)"\} (\S+)$', text, re.M)}


def wait_all(kube, namespace: str, names: list[str], predicate, timeout: float, plural: str = "modeldeployments") -> None:
    for name in names:
        kube.wait_for(plural, name, predicate, namespace=namespace, timeout=timeout)


@pytest.fixture
def contention(cluster, tmp_path):
    upstream_tls = ssl.create_default_context(cafile=str(cluster.plane.ca_path))
    proxy = FaultyApiProxy(cluster.url, seed=11, ssl_context=upstream_tls).start()
    proxy.pause_faults()
    burners = CpuBurners(2, max_seconds=1800).start()
    try:
        yield proxy, proxy.write_kubeconfig(tmp_path / "kubeconfig-proxy", token=cluster.operator_token)
    finally:
        burners.stop()
        proxy.stop()


def test_decisions_stay_right_under_contention(cluster, kube, contention, fake_prometheus, tmp_path):
    from tests.processes import OperatorProcess, free_port

    proxy, kubeconfig = contention
    passing, failing = fake_prometheus(value=0), fake_prometheus(value=5)
    for namespace in ("promote", "abort", "rollback"):
        kube.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, namespace=None)
    recorder = WatchRecorder(cluster.url, {
        "md": "/apis/modelwarden.io/v1alpha1/modeldeployments",
        "deploy": "/apis/apps/v1/deployments",
        "vs": "/apis/networking.istio.io/v1/virtualservices",
        "dp": "/apis/modelwarden.io/v1alpha1/driftpolicies",
    }, cluster.plane.session).start()
    kubelet = PodKubelet(kube, interval=0.5).start()
    metrics_port = free_port()
    operator = OperatorProcess(kubeconfig=kubeconfig, log_path=tmp_path / "operator.log",
                               extra_args=("-A", "--metrics-port", str(metrics_port)), env=FAST)
    operator.start(timeout=120)
    proxy.resume_faults()
    names = [f"m{i}" for i in range(RUNS)]
    try:
        for name in names:  # the gates exist from the start: no canary step is ever ungated
            kube.create("driftpolicies", policy("promote", name, "canary", passing.url, retrain=False))
            kube.create("driftpolicies", policy("abort", name, "canary", failing.url, retrain=True))
            kube.create("modeldeployments", modeldeployment("promote", name, canary=True))
            kube.create("modeldeployments", modeldeployment("abort", name, canary=True))
            kube.create("modeldeployments", modeldeployment("rollback", name, canary=False))
        # Stable rollback needs a previous version: 1 is served, then the spec moves stable to 2.
        wait_all(kube, "rollback", names, lambda o: (o.get("status") or {}).get("phase") == "Stable", timeout=600)
        for name in names:
            kube.patch("modeldeployments", name, {"spec": {"stable": {"version": "2", "modelUri": f"file:///m/{name}/2"}}},
                       namespace="rollback")
        wait_all(kube, "rollback", names, lambda o: o["status"]["stable"]["version"] == "2" and o["status"]["phase"] == "Stable",
                 timeout=600)
        for name in names:
            kube.create("driftpolicies", policy("rollback", name, "stable", failing.url, retrain=True))

        wait_all(kube, "promote", names, lambda o: o["status"]["stable"]["version"] == "2" and o["status"]["phase"] == "Stable",
                 timeout=900)
        wait_all(kube, "abort", names, lambda o: o["status"].get("phase") == "RolledBack", timeout=900)
        wait_all(kube, "rollback", names, lambda o: o["status"].get("phase") == "RolledBack", timeout=900)
        for namespace in ("abort", "rollback"):
            wait_all(kube, namespace, names, lambda o: (o.get("status") or {}).get("lastRetrain"), timeout=600, plural="driftpolicies")
        # Children follow status: the stable Deployments serve what status says.
        served = lambda version: lambda d: d["spec"]["template"]["metadata"]["labels"]["version"] == version  # noqa: E731
        wait_all(kube, "promote", [f"{n}-stable" for n in names], served("2"), timeout=600, plural="deployments")
        wait_all(kube, "rollback", [f"{n}-stable" for n in names], served("1"), timeout=600, plural="deployments")
    finally:
        counters = proxy.counters()
        outcomes = reconcile_outcomes(metrics_port)
        kubelet.stop()
        recorder.stop()
        log = operator.log()
        operator.stop()

    print(f"watch recorder: {recorder.gaps} gaps, errors {recorder.errors[:5]}")
    assert recorder.gaps == 0, recorder.errors  # every event of the run was recorded
    # The proxy really did get in the way.
    assert counters["conflicts_injected"] > 0 and counters["errors_injected"] > 0 and counters["reordered"] > 0
    # ... and the operator met it: decisions refused as stale (409) were decided again, stale views skipped.
    print(f"proxy: {counters}; operator: {outcomes}")
    assert outcomes.get("conflict", 0) > 0, outcomes
    decisions = decisions_by_object(log)

    for name in names:
        # Promotion: the served stable and the stable Deployment only ever move forward.
        versions = changes([(o.get("status") or {}).get("stable", {}).get("version") for o in recorder.objects("md", "promote", name)])
        assert [v for v in versions if v] == ["1", "2"], (name, versions)
        uris = changes([model_uri(d) for d in recorder.objects("deploy", "promote", f"{name}-stable")])
        assert uris == [f"file:///m/{name}/1", f"file:///m/{name}/2"], (name, uris)
        final = kube.get("modeldeployments", name, namespace="promote")["status"]
        assert [(h["version"], h["reason"]) for h in final["history"]] == [("1", "Initial"), ("2", "Promoted")]
        steps = changes([o["status"].get("canaryStep") for o in recorder.objects("md", "promote", name) if o.get("status")])
        assert [s for s in steps if s is not None] == [0, 1], (name, steps)  # each step once, in order

        # Canary abort: the failing gate never let a step advance, and the abort came at the threshold (+1 at most).
        observed = [o.get("status") or {} for o in recorder.objects("md", "abort", name)]
        assert all((s.get("canaryStep") or 0) == 0 for s in observed), name
        canary_weights = {r["weight"] for o in recorder.objects("vs", "abort", name)
                          for r in o["spec"]["http"][0]["route"] if r["destination"]["host"].endswith("-canary")}
        assert canary_weights <= {20, 0}, (name, canary_weights)
        phases = changes([s.get("phase") for s in observed if s.get("phase")])
        assert phases.count("RolledBack") == 1 and phases[-1] == "RolledBack", (name, phases)
        assert acted_on_first_breach(decisions, "abort", name, "CanaryAborted")

        # Stable rollback: 1 -> 2 by the spec, back to 1 once, never 2 again.
        versions = changes([(o.get("status") or {}).get("stable", {}).get("version") for o in recorder.objects("md", "rollback", name)])
        assert [v for v in versions if v] == ["1", "2", "1"], (name, versions)
        uris = changes([model_uri(d) for d in recorder.objects("deploy", "rollback", f"{name}-stable")])
        assert uris == [f"file:///m/{name}/1", f"file:///m/{name}/2", f"file:///m/{name}/1"], (name, uris)
        assert acted_on_first_breach(decisions, "rollback", name, "StableRolledBack")

    # The error budget's count of looks: exactly one more per persisted judging evaluation of a version.
    for namespace in ("promote", "abort", "rollback"):
        for name in names:
            trail = looks_trail(recorder.objects("dp", namespace, name))
            assert trail, (namespace, name)
            previous_version, previous_looks = None, 0
            for version, at, looks, judged in trail:
                expected = (previous_looks if version == previous_version else 0) + judged
                assert looks == expected, (namespace, name, at, trail)
                previous_version, previous_looks = version, looks

    # One retraining Job per breach, whatever the 409s and 500s did to the creates.
    for namespace in ("abort", "rollback"):
        jobs = collections.Counter(j["metadata"]["labels"].get("modelwarden.io/policy") for j in kube.list("jobs", namespace=namespace))
        assert jobs == {name: 1 for name in names}, (namespace, jobs)
    # API faults are expected and handled: none of them escapes the operator's own code as a traceback.
    ours = [block for block in log.split("Traceback (most recent call last):")[1:] if "operator/modelwarden" in block[:3000]]
    assert not ours, ours[0][:3000]
