"""How often a DriftPolicy acts over time: false actions per rollout and per day, power per change.

Each run simulates a rollout the way the operator sees one. Two tracks (stable, canary) serve a
steady stream of rows; Prometheus scrapes their counters every 30 s; every ``interval`` the policy
reads each window's counts as the counters' growth between the scrapes at the window's edges (what
``prometheus/queries.py`` asks for), and the operator's own code judges them (``analysis.judge``)
and decides (``planning.backtest.Replay`` over ``tick.decide_tick``: the streak, failureThreshold,
the breach, the rollback). Nothing here re-implements a decision.

Scenarios: ``null`` (the canary is the stable model: every action is false), ``shift`` (one
feature moves by 0.2σ), ``scale`` (one feature's spread ×1.3 in variance), ``bimodal`` (one feature
splits into two modes with the same mean and variance) and ``tiny`` (0.01σ at a million
observations per window: significant and irrelevant, no action wanted). Policies: the shipped
canary-gate example (examples/driftpolicy-canary-gate.yaml) and the defaults (ks, fdr, window
30m, interval 1m, failureThreshold 3) on features alone.

    .venv/bin/python benchmarks/calibration.py --runs 200          # the table in docs/statistics.md
    .venv/bin/python benchmarks/calibration.py --runs 5 --json     # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from modelwarden.analysis.histograms import BucketMatrix  # noqa: E402
from modelwarden.analysis.judge import Observations, Reference, TrackWindow, judge  # noqa: E402
from modelwarden.api.driftpolicy import DriftPolicySpec  # noqa: E402
from modelwarden.planning.backtest import Replay  # noqa: E402
from modelwarden.planning.budget import evaluation_level  # noqa: E402
from modelwarden.planning.notification import AlertContext  # noqa: E402
from modelwarden.planning.policy import PolicyContext  # noqa: E402

SCRAPE_SECONDS = 30
EDGES = np.round(stats.norm.ppf(np.arange(1, 20) / 20), 6)  # a profile's 20 equiprobable bins of N(0, 1)
LATENCY_EDGES = np.array([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
DEFAULTS_POLICY = {"targetRef": {"name": "fraud"}, "track": "canary", "reference": {"track": "stable"}, "drift": {"predictions": False}}


def bin_probabilities(cdf) -> np.ndarray:
    """Probability of each (edge[i-1], edge[i]] bin and the +Inf bin under ``cdf``."""
    return np.diff(np.concatenate([[0.0], cdf(EDGES), [1.0]]))


NORMAL = bin_probabilities(stats.norm.cdf)
CHANGES = {
    "null": NORMAL,
    "shift": bin_probabilities(lambda x: stats.norm.cdf(x - 0.2)),
    "scale": bin_probabilities(lambda x: stats.norm.cdf(x / np.sqrt(1.3))),
    # 0.5 N(-0.8, 0.6²) + 0.5 N(0.8, 0.6²): mean 0, variance 0.64 + 0.36 = 1
    "bimodal": bin_probabilities(lambda x: 0.5 * stats.norm.cdf((x + 0.8) / 0.6) + 0.5 * stats.norm.cdf((x - 0.8) / 0.6)),
    "tiny": bin_probabilities(lambda x: stats.norm.cdf(x - 0.01)),
}


@dataclass(frozen=True)
class Setting:
    """A policy and the traffic it sees."""

    name: str
    spec: DriftPolicySpec
    features: int
    rows_per_window: int  # per track
    labels_per_window: int  # ground truth per track (0: no feedback)
    accuracy: float  # both tracks' true accuracy


@dataclass(frozen=True)
class Streams:
    """Cumulative counters of one track at every scrape (row 0: before the first)."""

    features: np.ndarray  # (scrapes + 1, features, bins)
    correct: np.ndarray  # (scrapes + 1,)
    labelled: np.ndarray
    errors: np.ndarray
    requests: np.ndarray
    latency: np.ndarray  # (scrapes + 1, latency bins)


def simulate(rng: np.random.Generator, setting: Setting, scrapes: int, drifted: np.ndarray, rows: int) -> Streams:
    """One track's counters: Poisson rows per scrape interval, multinomial bins per feature (feature
    0 follows ``drifted``, the rest N(0, 1)), binomial correctness and server errors."""
    window_scrapes = setting.spec.window.total_seconds() / SCRAPE_SECONDS
    per_scrape = rng.poisson(rows / window_scrapes, scrapes)
    counts = np.empty((scrapes, setting.features, len(NORMAL)))
    counts[:, 1:] = rng.multinomial(per_scrape[:, None].repeat(setting.features - 1, 1), NORMAL)
    counts[:, 0] = rng.multinomial(per_scrape, drifted)
    labelled = rng.poisson(setting.labels_per_window / window_scrapes, scrapes)
    correct = rng.binomial(labelled, setting.accuracy)
    errors = rng.binomial(per_scrape, 0.001)
    latency = rng.multinomial(per_scrape, [0.5, 0.3, 0.15, 0.04, 0.009, 0.001, 0.0, 0.0, 0.0])

    def cumulative(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)])

    return Streams(cumulative(counts), cumulative(correct), cumulative(labelled), cumulative(errors), cumulative(per_scrape),
                   cumulative(latency))


def window(streams: Streams, end: int, span: int, born: int) -> TrackWindow:
    """Counts between the scrapes at a window's edges (``end``, ``end - span``), as the queries read
    them; a track born inside the window counts from its first scrape, at 0."""
    start = max(end - span, born)
    names = [f"f{i}" for i in range(streams.features.shape[1])]
    features = BucketMatrix.from_bins(names, [EDGES] * len(names), streams.features[end] - streams.features[start])
    labelled = streams.labelled[end] - streams.labelled[start]
    correct = streams.correct[end] - streams.correct[start]
    latency = BucketMatrix.from_bins(["latency"], [LATENCY_EDGES], [streams.latency[end] - streams.latency[start]])
    requests = streams.requests[end] - streams.requests[start]
    errors = streams.errors[end] - streams.errors[start]
    return TrackWindow(
        features=features,
        prediction=BucketMatrix.empty(),
        latency=latency,
        confusion={("1", "1"): float(correct), ("0", "1"): float(labelled - correct)},
        counters={"predictions": float(requests), "requests": float(requests - errors), "errors": float(errors)},
    )


def rollout(rng: np.random.Generator, setting: Setting, change: np.ndarray, hours: float) -> datetime.timedelta | None:
    """One canary rollout of ``hours``: when the operator would first act — the breach (None: never)."""
    spec = setting.spec
    interval = int(spec.interval.total_seconds())
    span = int(spec.window.total_seconds()) // SCRAPE_SECONDS
    scrapes = int(hours * 3600) // SCRAPE_SECONDS + span + 1
    rows = setting.rows_per_window
    stable = simulate(rng, setting, scrapes, NORMAL, rows)
    canary = simulate(rng, setting, scrapes, change, rows)
    context = PolicyContext(name="gate", namespace="ml", uid="uid", spec=spec, generation=1, created=START,
                            alert=AlertContext(policy="gate", namespace="ml", modeldeployment="fraud", model="fraud",
                                               track="canary", version="2"))
    replay = Replay(context)
    born = span  # the canary starts with the rollout, a window after the stable's history begins
    for second in range(interval, int(hours * 3600) + 1, interval):
        at = born * SCRAPE_SECONDS + second + SCRAPE_SECONDS // 2  # between scrapes, as most evaluations are
        end = at // SCRAPE_SECONDS
        current, reference = window(canary, end, span, born), window(stable, end, span, 0)
        observations = Observations(current=current, reference=Reference("stable", reference.features, reference.prediction),
                                    baseline=reference)
        now = START + datetime.timedelta(seconds=at)
        level = evaluation_level(spec, replay.status, context.alert.version)  # as the operator spends spec.alpha
        evaluation = judge(spec, observations, now, level).evaluation
        replay.observe(evaluation)
        if replay.breaches:  # the breach: the alert, and the rollback and retraining the policy asks for
            return datetime.timedelta(seconds=second)
    return None


def settings(rows: int, features: int) -> list[Setting]:
    example = yaml.safe_load((ROOT / "examples" / "driftpolicy-canary-gate.yaml").read_text())["spec"]
    return [
        Setting("canary-gate example", DriftPolicySpec.model_validate({**example, "drift": {**example["drift"], "predictions": False}}),
                features, rows, 1500, 0.87),
        Setting("defaults (drift only)", DriftPolicySpec.model_validate(DEFAULTS_POLICY), features, rows, 0, 0.87),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="rollouts per setting and scenario")
    parser.add_argument("--hours", type=float, default=2.0, help="length of a rollout")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rows", type=int, default=5000, help="observations per window and track")
    parser.add_argument("--scenarios", default=",".join(CHANGES), help=f"comma-separated, of {', '.join(CHANGES)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    table = []
    for setting in settings(args.rows, args.features):
        for scenario in args.scenarios.split(","):
            rows = 1_000_000 if scenario == "tiny" else args.rows
            started = time.perf_counter()
            acted = [rollout(rng, Setting(**{**setting.__dict__, "rows_per_window": rows}), CHANGES[scenario], args.hours)
                     for _ in range(args.runs)]
            within = lambda minutes: sum(a is not None and a <= datetime.timedelta(minutes=minutes) for a in acted) / args.runs  # noqa: E731
            row = {"setting": setting.name, "scenario": scenario, "runs": args.runs, "rowsPerWindow": rows,
                   "actedWithin30m": within(30), "actedWithin1h": within(60), f"actedWithin{args.hours:g}h": within(args.hours * 60),
                   "seconds": round(time.perf_counter() - started, 1)}
            table.append(row)
            if not args.json:
                print(f"{setting.name:22} {scenario:8} {rows:>8} rows/window  acted within 30 min {row['actedWithin30m']:6.1%}  "
                      f"1 h {row['actedWithin1h']:6.1%}  {args.hours:g} h {row[f'actedWithin{args.hours:g}h']:6.1%}  "
                      f"({args.runs} runs, {row['seconds']} s)", flush=True)
    if args.json:
        print(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
