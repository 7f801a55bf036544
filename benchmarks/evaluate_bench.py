"""Benchmark the analysis engine: one policy, 1000 features × 20 buckets, real Prometheus.

    .venv/bin/python benchmarks/evaluate_bench.py [--features 1000] [--runs 50]

Backfills canary and stable feature histograms (promtool), starts Prometheus, evaluates a
DriftPolicy (canary against stable, ks) repeatedly and prints the median time split into query
(HTTP round trips including Prometheus's own work), parse (JSON to arrays) and statistics. Then
times the pure statistics alone (judge on in-memory histograms) for 10…10000 features.
"""

from __future__ import annotations

import argparse
import gc
import statistics as stats_module
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelwarden.analysis.judge import Observations, Reference, TrackWindow, judge  # noqa: E402
from modelwarden.analysis.histograms import BucketMatrix  # noqa: E402
from modelwarden.api.driftpolicy import DriftPolicySpec  # noqa: E402
from modelwarden.prometheus.collect import Target, evaluate  # noqa: E402
from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider  # noqa: E402
from modelwarden.sandbox.prometheus import PrometheusServer  # noqa: E402
from tests.integration.evaluate_history import History, hours_ago_aligned  # noqa: E402

EDGES = np.round(stats.norm.ppf(np.arange(1, 20) / 20), 6)  # 19 edges + +Inf = 20 buckets
SPEC = DriftPolicySpec.model_validate(
    {
        "targetRef": {"name": "bench"},
        "track": "canary",
        "window": "30m",
        "reference": {"track": "stable"},
        "drift": {"predictions": False},
    }
)


def probabilities(shift: float = 0.0) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], stats.norm.cdf(EDGES - shift), [1.0]]))


def backfilled_history(features: int) -> History:
    """Both tracks, 30 minutes at 5-minute samples: exactly one window of data per track."""
    history = History(hours_ago_aligned(2), 6, seed=1, step=300)
    for track, version in (("stable", "1"), ("canary", "2")):
        labels = {"model": "bench", "version": version, "track": track}
        for i in range(features):
            shift = 0.3 if track == "canary" and i == 7 else 0.0
            history.histogram(
                "modelwarden_feature_value", {**labels, "feature": f"f{i:05d}"}, EDGES, lambda k, s=shift: (1000, probabilities(s))
            )
        history.counter("modelwarden_predictions", "modelwarden_predictions_total", labels, 1000)
    return history


def end_to_end(features: int, runs: int) -> None:
    print(f"backfilling {features} features × {EDGES.size + 1} buckets × 2 tracks …", flush=True)
    history = backfilled_history(features)
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as workdir:
        server = PrometheusServer(workdir=Path(workdir))
        try:
            server.backfill(history.openmetrics())
            at = datetime.fromtimestamp(history.end, timezone.utc)
            del history  # millions of live strings would make every garbage collection (and so parsing) slower
            gc.collect()
            server.start()
            target = Target("bench", versions={"stable": "1", "canary": "2"})
            with PrometheusProvider(PrometheusConfig(server.url)) as provider:
                evaluate(SPEC, target, provider, at)  # warm up Prometheus caches and the connection
                timings, totals = [], []
                for _ in range(runs):
                    started = time.perf_counter()
                    timed = evaluate(SPEC, target, provider, at)
                    totals.append(time.perf_counter() - started)
                    timings.append(timed.timings)
                floor = selection_floor(server.url, at)
            drifted = timed.report.drift[0].drifted_names
            print(f"verdict {timed.report.evaluation.verdict.value}, drifted {drifted}")
            median = lambda values: stats_module.median(values) * 1000  # noqa: E731
            print(
                f"end to end (median of {runs}): {median(totals):.1f} ms = query {median([t.query for t in timings]):.1f} ms"
                f" + parse {median([t.parse for t in timings]):.1f} ms + statistics {median([t.statistics for t in timings]):.2f} ms"
            )
            print(
                f"floor: Prometheus alone needs {floor * 1000:.1f} ms (its own evalTotalTime, median) just to select and"
                f" count one track's {features * (EDGES.size + 1)} bucket series; a policy selects two tracks"
            )
        finally:
            server.cleanup()


def selection_floor(url: str, at: datetime, runs: int = 15) -> float:
    """Prometheus's own time for `count()` over one track's feature buckets: no increase(), no
    aggregation by label, a one-number answer — the least any evaluation of these series costs."""
    import requests

    query = 'count(modelwarden_feature_value_bucket{model="bench",track="canary",version="2"})'
    timings = []
    for _ in range(runs):
        answer = requests.get(f"{url}/api/v1/query", params={"query": query, "time": at.timestamp(), "stats": "all"}, timeout=30)
        timings.append(answer.json()["data"]["stats"]["timings"]["evalTotalTime"])
    return stats_module.median(timings)


def statistics_only(runs: int) -> None:
    rng = np.random.default_rng(0)
    for features in (10, 100, 1000, 10000):
        names = [f"f{i:05d}" for i in range(features)]
        edges = [EDGES] * features
        reference = BucketMatrix.from_bins(names, edges, rng.multinomial(5000, probabilities(), size=features))
        current = BucketMatrix.from_bins(names, edges, rng.multinomial(5000, probabilities(), size=features))
        observations = Observations(TrackWindow(features=current), Reference("bench", reference, BucketMatrix.empty()))
        now = datetime.now(timezone.utc)
        seconds = [judge(SPEC, observations, now).statistics_seconds for _ in range(runs)]
        print(f"statistics, {features:>5} features: median {stats_module.median(seconds) * 1000:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    end_to_end(args.features, args.runs)
    statistics_only(args.runs)


if __name__ == "__main__":
    main()
