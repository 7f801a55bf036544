"""Benchmark the operator's breach -> action latency: from the DriftPolicy evaluation that reaches
failureThreshold to the ModelDeployment's rollback (canary abort), quiet and under contention.

Starts a real control plane (etcd + kube-apiserver + kube-controller-manager built by `make
control-plane`, with the chart's RBAC; ``--control-plane emulator`` uses the API emulator instead),
a kubelet stand-in, one FakePrometheus per trial and the real operator (`modelwarden run -A`, as
the chart's ServiceAccount) and runs ``--trials`` trials, ``--parallel`` at a time, each in its own
namespace. A trial creates a canary DriftPolicy (interval ``--interval``, window = interval,
minSamples 1, failureThreshold 2, rollback) with a custom check against its FakePrometheus, and a
ModelDeployment (stable v1, canary v2 at 20 % paused 1 h, istio). Once the ModelDeployment is
Progressing and the policy has a Pass, the FakePrometheus starts answering a failing value, and the
benchmark polls the ModelDeployment (directly on the API server, every 0.05 s) until it is RolledBack.

Per trial it records, from the DriftPolicy's ring buffer (``status.evaluations``), the time of the
evaluation at which the failure streak reached failureThreshold, and computes

* ``status`` latency: ``status.rollback.at`` minus that evaluation's time, both as the operator
  wrote them (the operator's own clock; both have sub-second precision, so this is the latency
  itself, ending when the rollback was decided, before the status write);
* ``observed`` latency: the wall time at which this process first saw phase RolledBack minus that
  evaluation's time: an upper bound (it adds the status write and up to one 0.05 s poll);
* extra evaluations: Fail evaluations in the ring buffer after the threshold evaluation and up to
  the rollback (0 = the rollback acted on the threshold's own evaluation), and the same number as
  the operator reports it (``failed Nx`` in ``status.rollback.reason``, minus failureThreshold).

Modes: ``quiet`` (the operator talks to the API server directly), ``contention`` (through
FaultyApiProxy with its default faults: 0.3-2 s per call, 5 % 409, 10 % 500, delayed and reordered
watch events, while CpuBurners(2) keep both cores busy), or ``both``. Every process it starts is
stopped on exit, Ctrl-C included.

    .venv/bin/python benchmarks/breach_latency.py                       # both modes, 10 trials each (~2 minutes)
    .venv/bin/python benchmarks/breach_latency.py --mode quiet --trials 20 --parallel 10 --json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from modelwarden.sandbox.apiserver import EmulatedApiServer  # noqa: E402
from tests.contention import CpuBurners, FaultyApiProxy  # noqa: E402
from tests.kubeclient import KubeClient  # noqa: E402
from tests.processes import OperatorProcess  # noqa: E402
from tests.realcluster import Cluster, PodKubelet  # noqa: E402
from tests.simulators import FakePrometheus  # noqa: E402

THRESHOLD = 2
PASSING, FAILING = 0.0, 5.0
COUNTED = frozenset({"Pass", "Fail"})  # InsufficientData and Error neither count nor reset a streak
FAILED_NX = re.compile(r"failed (\d+)x")
POLL = 0.05


class EmulatorKubelet:
    """Marks every Deployment rolled out and ready on the emulator, which runs no controllers."""

    def __init__(self, kube: KubeClient, interval: float) -> None:
        self.kube, self.interval = kube, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for deployment in self.kube.list("deployments", namespace=None):
                    meta, replicas = deployment["metadata"], deployment["spec"].get("replicas", 1)
                    wanted = {"observedGeneration": meta["generation"], "replicas": replicas, "readyReplicas": replicas,
                              "updatedReplicas": replicas, "availableReplicas": replicas}
                    if {k: (deployment.get("status") or {}).get(k) for k in wanted} != wanted:
                        self.kube.patch("deployments", meta["name"], {"status": wanted}, meta["namespace"], subresource="status")
            except Exception:  # noqa: BLE001 - the emulator may be shutting down
                pass

    def start(self) -> "EmulatorKubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Interrupted(Exception):
    """The run is being stopped (Ctrl-C, SIGTERM or another trial's fatal error)."""


@dataclass
class Trial:
    mode: str
    index: int
    namespace: str
    ok: bool = False
    error: str = ""
    threshold_at: str = ""  # the evaluation that reached failureThreshold (operator clock)
    rollback_at: str = ""  # status.rollback.at (operator clock)
    status_latency: float | None = None  # rollback.at - threshold evaluation
    observed_latency: float | None = None  # first poll that saw RolledBack - threshold evaluation
    extra_evaluations: int | None = None  # Fail evaluations after the threshold one, up to the rollback
    reason_failures: int | None = None  # N in "failed Nx" of status.rollback.reason
    reason: str = ""
    rollback_track: str = ""


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def whole_seconds(value: str) -> bool:
    return "." not in value


def modeldeployment(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": name,
            "stable": {"version": "1", "modelUri": f"file:///m/{name}/1"},
            "canary": {"version": "2", "modelUri": f"file:///m/{name}/2", "steps": [{"weight": 20, "pause": "1h"}]},
            "traffic": {"router": "istio"},
        },
    }


def driftpolicy(namespace: str, name: str, prometheus_url: str, interval: float) -> dict[str, Any]:
    """A canary gate every `interval` seconds (a query may take at most min(2 s, interval): the API
    refuses a timeout longer than the interval)."""
    return {
        "apiVersion": "modelwarden.io/v1alpha1", "kind": "DriftPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"name": name}, "track": "canary", "interval": f"{interval:g}s", "window": f"{interval:g}s", "minSamples": 1,
            "failureThreshold": THRESHOLD,
            "checks": [{"name": "errors", "query": 'sum(errors{ {{ selector }} })', "max": 1}],
            "prometheus": {"url": prometheus_url, "timeout": f"{min(2.0, interval):g}s"},
            "actions": {"rollback": True},
        },
    }


def threshold_evaluation(evaluations: list[dict[str, Any]]) -> int | None:
    """Index of the evaluation at which the Fail streak first reached THRESHOLD. Only the failing
    value makes a Fail, so every Fail is after the switch (an evaluation that started just before
    it may have queried after it: its time is then before the switch, and it still counts)."""
    streak = 0
    for i, entry in enumerate(evaluations):
        if entry.get("verdict") == "Pass":
            streak = 0
        elif entry.get("verdict") == "Fail":
            streak += 1
            if streak == THRESHOLD:
                return i
    return None


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.stopping = threading.Event()
        self.prometheuses: list[FakePrometheus] = []
        self.lock = threading.Lock()
        self.proxy_counters: dict[str, Any] = {}

    def sleep(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise Interrupted()

    def poll(self, what: str, probe, timeout: float) -> Any:
        """Call probe() every POLL seconds until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = probe()
            except Exception as exc:  # noqa: BLE001 - the emulator answers; a transient error is retried
                last = exc
            else:
                if last:
                    return last
            self.sleep(POLL)
        raise TimeoutError(f"{what}: not reached in {timeout:.0f} s")

    def fake_prometheus(self) -> FakePrometheus:
        fake = FakePrometheus(value=PASSING)
        with self.lock:
            self.prometheuses.append(fake)
        return fake

    def stop_prometheuses(self) -> None:
        with self.lock:
            fakes, self.prometheuses = self.prometheuses, []
        for fake in fakes:
            try:
                fake.stop()
            except Exception:  # noqa: BLE001
                pass

    # -- one trial -------------------------------------------------------------------------

    def trial(self, kube: KubeClient, mode: str, index: int) -> Trial:
        namespace, name = f"{mode}-{index}", "model"
        result = Trial(mode, index, namespace)
        if self.args.control_plane == "real":
            kube.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}, namespace=None)
        fake = self.fake_prometheus()
        timeout = self.args.timeout
        try:
            kube.create("driftpolicies", driftpolicy(namespace, name, fake.url, self.args.interval))
            kube.create("modeldeployments", modeldeployment(namespace, name))
            self.poll("ModelDeployment Progressing",
                      lambda: ((kube.get("modeldeployments", name, namespace) or {}).get("status") or {}).get("phase") == "Progressing",
                      timeout)
            self.poll("DriftPolicy Pass", lambda: any(
                e.get("verdict") == "Pass"
                for e in ((kube.get("driftpolicies", name, namespace) or {}).get("status") or {}).get("evaluations") or []), timeout)
            fake.value = FAILING

            def rolled_back() -> dict[str, Any] | None:
                status = (kube.get("modeldeployments", name, namespace) or {}).get("status") or {}
                return status if status.get("phase") == "RolledBack" else None

            status = self.poll("ModelDeployment RolledBack", rolled_back, timeout)
            seen = datetime.datetime.now(datetime.timezone.utc)
            rollback = status.get("rollback") or {}
            result.rollback_at, result.reason, result.rollback_track = rollback.get("at", ""), rollback.get("reason", ""), rollback.get("track", "")
            if not result.rollback_at:
                raise RuntimeError(f"phase RolledBack without status.rollback: {status}")
            at = parse_time(result.rollback_at)
            end = at + datetime.timedelta(seconds=1) if whole_seconds(result.rollback_at) else at

            # An evaluation that started before the rollback may be written after it: wait until the
            # ring buffer holds one that started after the rollback (or a couple of intervals).
            def settled() -> list[dict[str, Any]] | None:
                evaluations = ((kube.get("driftpolicies", name, namespace) or {}).get("status") or {}).get("evaluations") or []
                return evaluations if any(parse_time(e["time"]) > end for e in evaluations) else None

            try:
                evaluations = self.poll("DriftPolicy evaluation after the rollback", settled, 3 * self.args.interval + 5)
            except TimeoutError:
                evaluations = ((kube.get("driftpolicies", name, namespace) or {}).get("status") or {}).get("evaluations") or []
            reached = threshold_evaluation(evaluations)
            if reached is None:
                raise RuntimeError(f"no {THRESHOLD} consecutive Fails in the ring buffer: {evaluations}")
            result.threshold_at = evaluations[reached]["time"]
            threshold = parse_time(result.threshold_at)
            result.status_latency = (at - threshold).total_seconds()
            result.observed_latency = (seen - threshold).total_seconds()
            result.extra_evaluations = sum(
                1 for e in evaluations[reached + 1:] if e.get("verdict") == "Fail" and threshold < parse_time(e["time"]) <= end)
            counted = FAILED_NX.search(result.reason)
            result.reason_failures = int(counted.group(1)) if counted else None
            result.ok = True
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed trial is reported, the others go on
            result.error = f"{type(exc).__name__}: {exc}"[:500]
        return result

    # -- one mode --------------------------------------------------------------------------

    def run_mode(self, mode: str) -> list[Trial]:
        args = self.args
        with ExitStack() as stack:
            if args.control_plane == "real":
                cluster = Cluster(self.workdir / f"cluster-{mode}").start()
                stack.callback(cluster.stop)
                kube, kubeconfig, token = cluster.kube, cluster.operator_kubeconfig, cluster.operator_token
                upstream_tls = ssl.create_default_context(cafile=str(cluster.plane.ca_path))
            else:
                server = EmulatedApiServer(crd_dir=ROOT / "crds", extra_crd_dirs=(ROOT.parent / "shared" / "schemas",)).start()
                stack.callback(server.stop)
                kube, kubeconfig, token = KubeClient(server.url), server.write_kubeconfig(self.workdir / f"kubeconfig-{mode}"), "emulator"
                upstream_tls = None
            kubelet = (PodKubelet if args.control_plane == "real" else EmulatorKubelet)(kube, interval=0.2).start()
            stack.callback(kubelet.stop)
            proxy = None
            if mode == "contention":
                proxy = FaultyApiProxy(kube.url, seed=args.seed, ssl_context=upstream_tls).start()
                stack.callback(proxy.stop)
                proxy.pause_faults()  # a clean start; the faults begin with the trials
                kubeconfig = proxy.write_kubeconfig(self.workdir / "kubeconfig-proxy", token=token)
            log_path = self.workdir / f"operator-{mode}.log"
            operator = OperatorProcess(kubeconfig=kubeconfig, log_path=log_path, extra_args=("-A",), env={
                "MODELWARDEN_RECONCILE_INTERVAL": f"{args.reconcile_interval:g}",
                "MODELWARDEN_POLICY_TICK": f"{args.policy_tick:g}",
            })
            stack.callback(operator.stop)  # also when start() fails half-way
            operator.start(timeout=120)
            if proxy is not None:
                burners = CpuBurners(2, max_seconds=args.timeout * (args.trials + 2)).start()
                stack.callback(burners.stop)
                stack.callback(proxy.pause_faults)  # on the way out: a quick graceful operator shutdown
                proxy.resume_faults()
            stack.callback(self.stop_prometheuses)
            trials: list[Trial] = []
            pool = ThreadPoolExecutor(max_workers=args.parallel, thread_name_prefix=f"trial-{mode}")
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            stack.callback(self.stopping.set)  # runs first: the trials still polling end at once
            futures = [pool.submit(self.trial, kube, mode, i) for i in range(args.trials)]
            for future in as_completed(futures):
                trial = future.result()
                trials.append(trial)
                if not args.json:
                    status = f"{trial.status_latency:.3f} s, extra {trial.extra_evaluations}" if trial.ok else f"failed: {trial.error}"
                    print(f"  {mode} trial {trial.index}: {status}", file=sys.stderr, flush=True)
            if proxy is not None:
                self.proxy_counters = {k: round(v, 1) if isinstance(v, float) else v for k, v in proxy.counters().items()}
            if any(not t.ok for t in trials):
                (self.workdir / "kept").touch()
        self.stopping.clear()
        return sorted(trials, key=lambda t: t.index)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(mode: str, trials: list[Trial]) -> dict[str, Any]:
    ok = [t for t in trials if t.ok]

    def spread(values: list[float]) -> dict[str, float]:
        return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "max": max(values, default=math.nan)}

    extra = [t.extra_evaluations for t in ok if t.extra_evaluations is not None]
    reason_extra = [t.reason_failures - THRESHOLD for t in ok if t.reason_failures is not None]
    return {
        "mode": mode,
        "trials": len(trials),
        "ok": len(ok),
        "status_latency_s": spread([t.status_latency for t in ok if t.status_latency is not None]),
        "observed_latency_s": spread([t.observed_latency for t in ok if t.observed_latency is not None]),
        "extra_evaluations": {"median": statistics.median(extra) if extra else math.nan, "max": max(extra, default=math.nan)},
        "extra_by_reason": {"median": statistics.median(reason_extra) if reason_extra else math.nan,
                            "max": max(reason_extra, default=math.nan)},
        "errors": [f"{t.namespace}: {t.error}" for t in trials if not t.ok],
    }


def number(value: float, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:>{width}.{digits}f}"


def print_table(summaries: list[dict[str, Any]], args: argparse.Namespace, proxy: dict[str, Any]) -> None:
    print(f"breach -> rollback latency: interval {args.interval:g}s, failureThreshold {THRESHOLD}, "
          f"{args.trials} trials per mode, {args.parallel} in parallel "
          f"(reconcile interval {args.reconcile_interval:g}s, policy tick {args.policy_tick:g}s)")
    print(f"{'':12} {'':>6}   {'status.rollback.at latency (s)':^26}   {'observed latency (s), upper bound':^33}   "
          f"{'extra evaluations':^23}")
    print(f"{'mode':12} {'trials':>6}   {'p50':>8}{'p95':>9}{'max':>9}   {'p50':>11}{'p95':>11}{'max':>11}   "
          f"{'median':>7}{'max':>5}  {'reason':>6}{'max':>5}")
    for s in summaries:
        st, ob, ex, rx = s["status_latency_s"], s["observed_latency_s"], s["extra_evaluations"], s["extra_by_reason"]
        trials = f"{s['ok']}/{s['trials']}"
        print(f"{s['mode']:12} {trials:>6}   {number(st['p50'], 8, 3)}{number(st['p95'], 9, 3)}{number(st['max'], 9, 3)}   "
              f"{number(ob['p50'], 11, 3)}{number(ob['p95'], 11, 3)}{number(ob['max'], 11, 3)}   "
              f"{number(ex['median'], 7, 1)}{number(ex['max'], 5, 0)}  {number(rx['median'], 6, 1)}{number(rx['max'], 5, 0)}")
    print("latency: from the start of the evaluation that reached failureThreshold; status.rollback.at is when the "
          "operator decided the rollback, observed is when this process first read phase RolledBack (+<=0.05 s poll)")
    print("extra evaluations: Fail evaluations after the threshold one up to the rollback (ring buffer); "
          "reason: 'failed Nx' in status.rollback.reason minus failureThreshold")
    if proxy:
        print(f"contention proxy: {proxy['requests']} requests, {proxy['errors_injected']} 500s and "
              f"{proxy['conflicts_injected']} 409s injected, {proxy['reordered']} watch events reordered")
    for s in summaries:
        for error in s["errors"]:
            print(f"{s['mode']} trial failed: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("quiet", "contention", "both"), default="both")
    parser.add_argument("--control-plane", choices=("real", "emulator"), default="real",
                        help="a real kube-apiserver (make control-plane) or the API emulator of make demo")
    parser.add_argument("--trials", type=int, default=10, help="trials per mode")
    parser.add_argument("--parallel", type=int, default=5, help="trials running at the same time (distinct namespaces)")
    parser.add_argument("--interval", type=float, default=2.0, help="DriftPolicy interval and window, seconds")
    parser.add_argument("--reconcile-interval", type=float, default=2.0, help="MODELWARDEN_RECONCILE_INTERVAL")
    parser.add_argument("--policy-tick", type=float, default=0.5, help="MODELWARDEN_POLICY_TICK")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per wait within a trial")
    parser.add_argument("--seed", type=int, default=11, help="FaultyApiProxy seed (contention)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (operator logs)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    if args.trials < 1 or args.parallel < 1 or args.interval <= 0:
        parser.error("--trials, --parallel and --interval must be positive")

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)  # cleaned up like Ctrl-C
    modes = ("quiet", "contention") if args.mode == "both" else (args.mode,)
    workdir = Path(tempfile.mkdtemp(prefix="breach-latency-"))
    summaries, all_trials, proxies = [], [], {}
    try:
        bench = Bench(args, workdir)
        for mode in modes:
            if not args.json:
                print(f"running {mode}: {args.trials} trials, {args.parallel} in parallel …", file=sys.stderr, flush=True)
            trials = bench.run_mode(mode)
            all_trials += trials
            summaries.append(summarize(mode, trials))
            if mode == "contention":
                proxies = bench.proxy_counters
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    finally:
        keep = args.keep or (workdir / "kept").exists()
        if keep:
            print(f"operator logs kept in {workdir}", file=sys.stderr)
        else:
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()
    if args.json:
        print(json.dumps({"interval": args.interval, "failure_threshold": THRESHOLD, "parallel": args.parallel,
                          "reconcile_interval": args.reconcile_interval, "policy_tick": args.policy_tick,
                          "summaries": summaries, "proxy": proxies, "trials": [asdict(t) for t in all_trials]}, indent=2))
    else:
        print_table(summaries, args, proxies)
    return 0 if all(s["ok"] == s["trials"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
