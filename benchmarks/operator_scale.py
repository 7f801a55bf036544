"""Benchmark one operator process at scale: N ModelDeployments + N DriftPolicies on a real control
plane (etcd + kube-apiserver + kube-controller-manager from `make control-plane`, the chart's RBAC,
the kubelet stand-in), for each N of ``--n``.

Each round starts a fresh control plane, a FakePrometheus answering every query with one passing
value, and the real operator (`modelwarden run -A`, as the chart's ServiceAccount, INFO logging)
behind a counting proxy (FaultyApiProxy with its faults off: it only counts the operator's API
requests). It then creates N ModelDeployments (stable only, replica router, 1 replica) and N
DriftPolicies (stable track, interval ``--interval``, one custom check), and measures:

* ``converged_seconds``: from the first create until every ModelDeployment's Deployment and
  Services exist;
* ``stable_seconds``: until every ModelDeployment is phase Stable (its pod ready);
* ``evaluated_seconds``: until every DriftPolicy has a ``lastEvaluation``;
* over a steady window of ``--steady`` seconds after that: the operator's CPU in cores and its
  RSS (from /proc), the kube-apiserver's CPU, and ``api_requests_per_idle_reconcile``: the
  operator's non-watch API requests (counted per resource at the proxy), except the DriftPolicy
  status writes each evaluation makes, per ModelDeployment reconcile (counted by the operator's
  own /metrics) — 0 means a reconcile with nothing to change sends nothing;
* ``canary_patch_to_deployment_seconds``: one ModelDeployment patched to add a canary, until the
  canary Deployment exists;
* with ``--policies-per-model K``: K DriftPolicies per ModelDeployment asking the same query, and
  over the steady window ``queries_asked`` (by the evaluations), ``queries_shared`` (answered by
  an identical query of another policy at the same instant) and ``prometheus_requests`` (what
  reached the fake Prometheus).

Every process it starts is stopped on exit. Prints a table, or one JSON object per N (``--json``).

    .venv/bin/python benchmarks/operator_scale.py --n 50,200
    .venv/bin/python benchmarks/operator_scale.py --n 1000 --steady 120 --json
    .venv/bin/python benchmarks/operator_scale.py --n 200 --policies-per-model 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready  # noqa: E402
from tests.contention import FaultyApiProxy  # noqa: E402
from tests.realcluster import Cluster, PodKubelet  # noqa: E402
from tests.simulators import FakePrometheus  # noqa: E402

NAMESPACE = "ml"
MANAGED = "app.kubernetes.io/managed-by=modelwarden"
RECONCILES = re.compile(r"^modelwarden_operator_reconciles_total\{[^}]*\} ([0-9.e+]+)$", re.M)
QUERIES = re.compile(r'^modelwarden_operator_prometheus_queries_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)
TICKS = os.sysconf("SC_CLK_TCK")


def modeldeployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": name, "stable": {"version": "1", "modelUri": f"file:///m/{name}/1", "replicas": 1},
                 "traffic": {"router": "replicas"}},
    }


def driftpolicy(name: str, model: str, prometheus_url: str, interval: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"targetRef": {"name": model}, "track": "stable", "interval": interval, "window": interval, "minSamples": 1,
                 "checks": [{"name": "errors", "query": 'sum(errors{ {{ selector }} })', "max": 1}],
                 "prometheus": {"url": prometheus_url, "timeout": "2s"}},
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reconciles(metrics_url: str) -> float:
    return sum(float(v) for v in RECONCILES.findall(requests.get(metrics_url, timeout=10).text))


def queries(metrics_url: str) -> dict[str, float]:
    """The operator's Prometheus queries so far: {"fetched": …, "shared": …}."""
    found = {outcome: float(v) for outcome, v in QUERIES.findall(requests.get(metrics_url, timeout=10).text)}
    return {"fetched": found.get("fetched", 0.0), "shared": found.get("shared", 0.0)}


def until(what: str, done: Callable[[], bool], started: float, timeout: float, poll: float = 1.0) -> float:
    """Seconds from `started` until done() holds (polled every `poll` s); fails after `timeout`."""
    while not done():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(poll)
    return time.monotonic() - started


def run_round(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        cluster = Cluster(workdir / f"cluster-{n}").start()
        stack.callback(cluster.stop)
        kube = cluster.kube
        kubelet = PodKubelet(kube, interval=1.0).start()
        stack.callback(kubelet.stop)
        prometheus = FakePrometheus(value=0.0)  # serving from construction on
        stack.callback(prometheus.stop)
        proxy = FaultyApiProxy(kube.url, ssl_context=ssl.create_default_context(cafile=str(cluster.plane.ca_path))).start()
        stack.callback(proxy.stop)
        proxy.pause_faults()
        kubeconfig = proxy.write_kubeconfig(workdir / f"kubeconfig-{n}", token=cluster.operator_token)
        metrics_port, liveness_port = free_port(), free_port()
        log = (workdir / f"operator-{n}.log").open("w")
        stack.callback(log.close)
        operator = subprocess.Popen(
            [str(Path(sys.executable).parent / "modelwarden"), "run", "-A", "--metrics-port", str(metrics_port),
             "--allowed-prometheus-urls", prometheus.url,
             "--scrape-interval", "0.5s",  # the fake answers any window; the policies' windows are 2 s
             "--liveness", f"http://127.0.0.1:{liveness_port}/healthz"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        stack.callback(terminate, operator)
        wait_until_ready(operator, f"http://127.0.0.1:{liveness_port}/healthz", "operator",
                         lambda: (workdir / f"operator-{n}.log").read_text()[-3000:], timeout=120)
        apiserver = cluster.plane.processes["kube-apiserver"].pid

        started = time.monotonic()
        per_model = args.policies_per_model
        for i in range(n):
            kube.create("modeldeployments", modeldeployment(f"m{i}"), namespace=NAMESPACE)
            for j in range(per_model):
                name = f"m{i}" if per_model == 1 else f"m{i}-p{j}"
                kube.create("driftpolicies", driftpolicy(name, f"m{i}", prometheus.url, args.interval), namespace=NAMESPACE)
        created = time.monotonic() - started

        def children() -> bool:
            deployments = kube.list("deployments", namespace=NAMESPACE, labelSelector=MANAGED)
            services = kube.list("services", namespace=NAMESPACE, labelSelector=MANAGED)
            return len(deployments) >= n and len(services) >= 2 * n  # front + stable Service each

        def phases(value: str) -> bool:
            return sum((o.get("status") or {}).get("phase") == value for o in kube.list("modeldeployments", namespace=NAMESPACE)) >= n

        def evaluated() -> bool:
            evaluated = sum(bool((o.get("status") or {}).get("lastEvaluation")) for o in kube.list("driftpolicies", namespace=NAMESPACE))
            return evaluated >= n * per_model

        result: dict[str, Any] = {"n": n, "policies": n * per_model, "create_seconds": round(created, 1)}
        milestones = {"converged_seconds": children, "stable_seconds": lambda: phases("Stable"), "evaluated_seconds": evaluated}
        while milestones:  # polled together: each records when it first held
            for key, done in list(milestones.items()):
                if done():
                    result[key] = round(time.monotonic() - started, 1)
                    del milestones[key]
            if time.monotonic() - started > args.timeout:
                raise TimeoutError(f"not reached within {args.timeout:.0f} s: {', '.join(milestones)}")
            time.sleep(1.0)

        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        cpu0, api_cpu0, reconciles0 = cpu_seconds(operator.pid), cpu_seconds(apiserver), reconciles(metrics_url)
        queries0, prometheus_requests0 = queries(metrics_url), len(prometheus.queries)
        by_resource0 = dict(proxy.by_resource)
        window0 = time.monotonic()
        time.sleep(args.steady)
        window = time.monotonic() - window0
        done = reconciles(metrics_url) - reconciles0
        by_resource = {k: v - by_resource0.get(k, 0) for k, v in dict(proxy.by_resource).items() if v > by_resource0.get(k, 0)}
        # DriftPolicies write their own status once per evaluation: not a ModelDeployment reconcile's request.
        sent = sum(v for k, v in by_resource.items() if not k.startswith("driftpolicies"))
        result.update({
            "operator_cores": round((cpu_seconds(operator.pid) - cpu0) / window, 3),
            "operator_rss_mb": round(rss_mb(operator.pid), 1),
            "apiserver_cores": round((cpu_seconds(apiserver) - api_cpu0) / window, 3),
            "reconciles_per_second": round(done / window, 2),
            "api_requests_by_resource": by_resource,
            "api_requests_per_idle_reconcile": round(sent / done, 3) if done else None,
        })
        asked = {k: v - queries0[k] for k, v in queries(metrics_url).items()}
        result.update({  # in the steady window: what the evaluations asked, and what reached Prometheus
            "queries_asked": int(asked["fetched"] + asked["shared"]),
            "queries_shared": int(asked["shared"]),
            "prometheus_requests": len(prometheus.queries) - prometheus_requests0,
        })

        patched = time.monotonic()
        kube.patch("modeldeployments", "m0", {"spec": {"canary": {"version": "2", "modelUri": "file:///m/m0/2", "weight": 10}}},
                   namespace=NAMESPACE)
        result["canary_patch_to_deployment_seconds"] = round(
            until("canary Deployment", lambda: kube.get("deployments", "m0-canary", namespace=NAMESPACE) is not None,
                  patched, 120, poll=0.05), 2)
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.returncode}")
        return result


COLUMNS = (("n", "N", 5), ("converged_seconds", "children s", 11), ("stable_seconds", "Stable s", 9),
           ("evaluated_seconds", "evaluated s", 12), ("operator_cores", "op cores", 9), ("operator_rss_mb", "op RSS MB", 10),
           ("apiserver_cores", "api cores", 10), ("reconciles_per_second", "rec/s", 6),
           ("api_requests_per_idle_reconcile", "req/idle rec", 13), ("canary_patch_to_deployment_seconds", "canary s", 9),
           ("queries_asked", "queries", 8), ("prometheus_requests", "to Prometheus", 14))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="50,200", help="comma-separated sizes (default 50,200)")
    parser.add_argument("--interval", default="60s", help="DriftPolicy interval (default 60s)")
    parser.add_argument("--policies-per-model", type=int, default=1,
                        help="DriftPolicies per ModelDeployment, all asking the same query (default 1): shows the shared fetches")
    parser.add_argument("--steady", type=float, default=120.0, help="seconds of the steady window (default 120)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for each milestone")
    parser.add_argument("--json", action="store_true", help="one JSON object per N")
    args = parser.parse_args()
    sizes = [int(part) for part in args.n.split(",") if part.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="mw-scale-"))
    results = []
    for n in sizes:
        result = run_round(n, args, workdir)
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    if not args.json:
        print(f"operator scale (steady window {args.steady:g} s, policies every {args.interval}; logs in {workdir})")
        print(" ".join(f"{title:>{width}}" for _, title, width in COLUMNS))
        for result in results:
            print(" ".join(f"{'-' if result[key] is None else result[key]!s:>{width}}" for key, _, width in COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
