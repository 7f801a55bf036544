"""Benchmark `modelwarden backtest`: 30 days at 1-minute steps, 100 features x 20 buckets.

The backtest runs as its own process (`modelwarden backtest ... -o json`), so its wall time and
peak memory (max RSS) are its own. Prometheus is replaced by a stand-in that answers the
Prometheus HTTP API with answers rendered before the clock starts: what is measured is the
backtest's work (HTTP transfer, JSON decoding, 43 200 evaluations by the operator's code and its
decisions), not Prometheus's own evaluation of the range queries, which a real server adds on top
(see docs/benchmarks.md for a real Prometheus at a smaller scale).

    .venv/bin/python benchmarks/backtest_bench.py [--days 30] [--features 100] [--step 60]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
MODELWARDEN = str(Path(sys.executable).with_name("modelwarden"))
EDGES = np.round(stats.norm.ppf(np.arange(1, 20) / 20), 6)  # 19 edges: 20 buckets (the last is +Inf)
WINDOW_OBSERVATIONS = 6000  # per feature per window
POLICY = """
apiVersion: modelwarden.io/v1alpha1
kind: DriftPolicy
metadata: {name: bench, namespace: ml}
spec:
  targetRef: {name: bench}
  interval: 1m
  window: 15m
  failureThreshold: 3
  reference: {profileRef: {configMap: {name: bench-profile, key: profile.json}}}
  drift: {predictions: false}
  actions: {rollback: true}
"""


def profile(features: int) -> str:
    from modelwarden.contract.profile import Distribution, PredictionProfile, Profile

    probabilities = np.diff(np.concatenate([[0.0], stats.norm.cdf(EDGES), [1.0]]))
    counts = np.round(probabilities * 1_000_000).astype(int).tolist()
    edges = [float(e) for e in EDGES]
    columns = [Distribution(name=f"f{i:03d}", kind="numeric", edges=edges, counts=counts, count=sum(counts), mean=0.0, std=1.0)
               for i in range(features)]
    prediction = PredictionProfile(name="prediction", kind="numeric", edges=edges, counts=counts, count=sum(counts),
                                   task="regression", source="model")
    return Profile(target="y", rows=1_000_000, bins=20, features=columns, prediction=prediction).to_json()


class StandIn:
    """Prometheus-API answers for the two expressions the policy queries, rendered up front."""

    def __init__(self, features: int, start: float, step: float, steps: int) -> None:
        self.features, self.start, self.step, self.steps = features, start, step, steps
        self.bodies: dict[tuple[str, float], bytes] = {}
        rng = np.random.default_rng(0)
        probabilities = np.diff(np.concatenate([[0.0], stats.norm.cdf(EDGES), [1.0]]))
        self.samples = rng.multinomial(WINDOW_OBSERVATIONS, probabilities, size=(64, features))  # 64 windows, reused cyclically
        self.cumulative = np.cumsum(self.samples, axis=2)

    def render_features(self, first: int, length: int) -> bytes:
        stamps = [f"{self.start + (first + i) * self.step:.3f}" for i in range(length)]
        les = [repr(float(e)) for e in EDGES] + ["+Inf"]
        cycle = (first + np.arange(length)) % self.cumulative.shape[0]
        parts = []
        for f in range(self.features):
            for b, le in enumerate(les):
                values = self.cumulative[cycle, f, b]
                points = ",".join(f'[{t},"{v}"]' for t, v in zip(stamps, values.tolist()))
                parts.append(f'{{"metric":{{"feature":"f{f:03d}","le":"{le}"}},"values":[{points}]}}')
        return ('{"status":"success","data":{"resultType":"matrix","result":[' + ",".join(parts) + "]}}").encode()

    def render_counters(self, first: int, length: int) -> bytes:
        points = ",".join(f'[{self.start + (first + i) * self.step:.3f},"{WINDOW_OBSERVATIONS}"]' for i in range(length))
        series = f'{{"metric":{{"modelwarden_quantity":"predictions"}},"values":[{points}]}}'
        return ('{"status":"success","data":{"resultType":"matrix","result":[' + series + "]}}").encode()

    def prerender(self, chunk: int) -> None:
        for first in range(0, self.steps, chunk):
            length = min(chunk, self.steps - first)
            at = self.start + first * self.step
            self.bodies[("features", at)] = self.render_features(first, length)
            self.bodies[("counters", at)] = self.render_counters(first, length)

    def answer(self, path: str, params: dict[str, str]) -> bytes:
        query = params["query"]
        kind = "features" if "modelwarden_feature_value_bucket" in query else "counters"
        if path.endswith("/query"):  # the count() that sizes the chunks
            count = self.features * (len(EDGES) + 1) if kind == "features" else 1
            return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [float(params.get("time", 0)), str(count)]}]}}).encode()
        return self.bodies[(kind, round(float(params["start"]), 3))]


def serve(stand_in: StandIn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, params: dict[str, str]) -> None:
            body = stand_in.answer(urlparse(self.path).path, params)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._reply({k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            self._reply({k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stand_in_process(features: int, start: float, step: float, steps: int, chunk: int, ready) -> None:
    """The stand-in in a process of its own: its gigabytes of answers never count as the backtest's
    memory (a child forked from a big parent starts with the parent's resident pages)."""
    stand_in = StandIn(features, start, step, steps)
    began = time.perf_counter()
    stand_in.prerender(chunk)
    server = serve(stand_in)
    ready.put((server.server_port, sum(len(body) for body in stand_in.bodies.values()), time.perf_counter() - began))
    threading.Event().wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--step", type=float, default=60.0)
    parser.add_argument("--max-points", type=int, default=1_000_000)
    args = parser.parse_args()
    steps = int(args.days * 86400 / args.step) + 1
    start = (time.time() - args.days * 86400 - 86400) // 3600 * 3600
    series = args.features * (len(EDGES) + 1)
    chunk = max(1, min(11_000, args.max_points // series))
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    helper = context.Process(target=stand_in_process, args=(args.features, start, args.step, steps, chunk, ready), daemon=True)
    helper.start()
    port, size, rendered = ready.get()
    with tempfile.TemporaryDirectory() as work:
        policy = Path(work, "policy.yaml")
        policy.write_text(POLICY)
        profile_path = Path(work, "profile.json")
        profile_path.write_text(profile(args.features))
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
        command = [MODELWARDEN, "backtest", "-f", str(policy), "--prometheus", f"http://127.0.0.1:{port}",
                   "--profile", str(profile_path), "--from", iso(start), "--to", iso(start + (steps - 1) * args.step),
                   "--step", f"{int(args.step)}s", "--max-points", str(args.max_points), "-o", "json", "--progress", "off"]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - began
    helper.terminate()
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    report = json.loads(done.stdout)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"backtest of {args.days:g} days at {args.step:g}s steps, {args.features} features x {len(EDGES) + 1} buckets "
          f"({series} series), profile reference")
    print(f"  answers rendered up front by the stand-in: {size / 1e9:.2f} GB in {rendered:.0f}s (not timed)")
    print(f"  evaluations: {report['evaluations']}; range queries: {report['queries']['range']}; count queries: {report['queries']['count']}")
    print(f"  verdicts: {report['verdicts']}; actions: {len(report['actions'])}; errors: {report['errors'][:1]}")
    print(f"  wall time: {wall:.1f}s (the command's own measure of the replay: {report['seconds']:.1f}s)")
    print(f"  per evaluation: {1000 * report['seconds'] / report['evaluations']:.2f} ms")
    print(f"  peak memory (max RSS of the backtest process): {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
