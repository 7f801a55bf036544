"""How often a DriftPolicy acts over time: false actions per rollout and per day, power per change.

Each run simulates a rollout the way the operator sees one. Two tracks (stable, canary) serve a
steady stream of rows; Prometheus scrapes their counters every 30 s; every ``interval`` the policy
reads each window's counts as the counters' growth between the scrapes at the window's edges (what
``prometheus/queries.py`` asks for), and the operator's own code judges them (``analysis.judge``)
and decides (``planning.backtest.Replay`` over ``tick.decide_tick``: the streak, failureThreshold,
the breach, the rollback). Nothing here re-implements a decision.

Scenarios: ``null`` (the canary is the stable model: every action is false), ``shift`` (one
feature moves by 0.2σ), ``scale`` (one feature's spread ×1.3 in variance), ``bimodal`` (one feature
splits into two modes with the same mean and variance), ``tail`` (the top 2 % of one feature move
up by 3σ: visible only through the profile's tail edges) and ``tiny`` (0.01σ at a million
observations per window: significant and irrelevant, no action wanted). Policies: the shipped
canary-gate example (examples/driftpolicy-canary-gate.yaml) and the defaults (combined, fdr, window
30m, interval 1m, failureThreshold 3) on features alone.

Two more families, each run on its own flag:

``--stable``: a stable-track policy (reference: a training profile) watching a model that never
changes, for ``--stable-days`` simulated days, every breach counted (the streak re-arms as the
operator's does). The stable track spends spec.alpha per day, so this is its false actions per day,
with an exact Poisson upper bound: the issue's acceptance is at most one per 30 days.

``--peers``: the rollout scenarios as raw rows, judged per evaluation by the defaults of two
libraries a drift cron job would call — Evidently 0.7 (DataDriftPreset) and Alibi Detect 0.13
(KSDrift) — beside modelwarden's defaults on the very same rows (binned as the model server
exports them). The peers are not the project's dependencies: install them in a separate venv
and run this file with its interpreter (see ``--peers --help``).

    .venv/bin/python benchmarks/calibration.py --runs 100          # the table in docs/statistics.md
    .venv/bin/python benchmarks/calibration.py --runs 5 --json     # a smoke run
    .venv/bin/python benchmarks/calibration.py --stable            # false actions per day on a stable model
    /tmp/peers-venv/bin/python benchmarks/calibration.py --peers --runs 5
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from modelwarden.analysis.histograms import BucketMatrix  # noqa: E402
from modelwarden.analysis.judge import Observations, Reference, TrackWindow, judge  # noqa: E402
from modelwarden.api.driftpolicy import DriftPolicySpec, Evaluation, Verdict  # noqa: E402
from modelwarden.planning.backtest import Replay  # noqa: E402
from modelwarden.planning.budget import evaluation_level  # noqa: E402
from modelwarden.planning.notification import AlertContext  # noqa: E402
from modelwarden.planning.policy import PolicyContext  # noqa: E402

SCRAPE_SECONDS = 30
# A profile of N(0, 1) as `modelwarden profile` builds it: 20 equiprobable bins and the two tail
# edges at the 0.5 % and 99.5 % quantiles (serving.profile.quantile_edges).
EDGES = np.round(stats.norm.ppf(np.concatenate([[0.005], np.arange(1, 20) / 20, [0.995]])), 6)
TOP = stats.norm.ppf(0.98)  # the `tail` scenario moves the values above it
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
    # the top 2 % moved up by 3σ: inside the open-ended top bucket of a profile without tail edges
    "tail": bin_probabilities(lambda x: stats.norm.cdf(np.minimum(x, TOP)) + np.maximum(stats.norm.cdf(x - 3) - 0.98, 0.0)),
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


def policy_context(spec: DriftPolicySpec) -> PolicyContext:
    """The policy as the operator holds it while judging ``spec.track`` of the fraud model."""
    return PolicyContext(name="gate", namespace="ml", uid="uid", spec=spec, generation=1, created=START,
                         alert=AlertContext(policy="gate", namespace="ml", modeldeployment="fraud", model="fraud",
                                            track=spec.track.value, version="2"))


def decide(replay: Replay, observations: Observations, now: datetime.datetime) -> Evaluation:
    """One evaluation as the operator runs it: judged at the level planning.budget gives this look
    (how the operator spends spec.alpha), then decided (the streak, the breach) by tick.decide_tick."""
    spec = replay.ctx.spec
    level = evaluation_level(spec, replay.status, replay.ctx.alert.version)
    evaluation = judge(spec, observations, now, level).evaluation
    replay.observe(evaluation)
    return evaluation


def rollout(rng: np.random.Generator, setting: Setting, change: np.ndarray, hours: float) -> datetime.timedelta | None:
    """One canary rollout of ``hours``: when the operator would first act — the breach (None: never)."""
    spec = setting.spec
    interval = int(spec.interval.total_seconds())
    span = int(spec.window.total_seconds()) // SCRAPE_SECONDS
    scrapes = int(hours * 3600) // SCRAPE_SECONDS + span + 1
    rows = setting.rows_per_window
    stable = simulate(rng, setting, scrapes, NORMAL, rows)
    canary = simulate(rng, setting, scrapes, change, rows)
    replay = Replay(policy_context(spec))
    born = span  # the canary starts with the rollout, a window after the stable's history begins
    for second in range(interval, int(hours * 3600) + 1, interval):
        at = born * SCRAPE_SECONDS + second + SCRAPE_SECONDS // 2  # between scrapes, as most evaluations are
        end = at // SCRAPE_SECONDS
        current, reference = window(canary, end, span, born), window(stable, end, span, 0)
        observations = Observations(current=current, reference=Reference("stable", reference.features, reference.prediction),
                                    baseline=reference)
        decide(replay, observations, START + datetime.timedelta(seconds=at))
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


# The stable track: false actions per day. -------------------------------------------------------

PROFILE_ROWS = 100_000  # training rows behind the stable track's reference profile
PROFILE_REFERENCE = {"profileRef": {"configMap": {"name": "fraud-profile"}}}
STABLE_DEFAULTS_POLICY = {"targetRef": {"name": "fraud"}, "reference": PROFILE_REFERENCE, "drift": {"predictions": False}}
DAY_SECONDS = 86_400
ACCEPTED_PER_30_DAYS = 1.0  # the issue's acceptance: no default acts falsely more than once per 30 days on a stable model


def stable_settings(rows: int, features: int) -> list[Setting]:
    """A stable track's policies (track: stable is the default): the defaults, and the canary-gate
    example's checks that apply to one — its comparison needs a second track, and its reference
    becomes the training profile."""
    example = yaml.safe_load((ROOT / "examples" / "driftpolicy-canary-gate.yaml").read_text())["spec"]
    on_stable = {key: value for key, value in example.items() if key not in ("comparison", "track")}
    on_stable |= {"reference": PROFILE_REFERENCE, "drift": {**example["drift"], "predictions": False}}
    return [
        Setting("defaults (drift only)", DriftPolicySpec.model_validate(STABLE_DEFAULTS_POLICY), features, rows, 0, 0.87),
        Setting("canary-gate example's checks", DriftPolicySpec.model_validate(on_stable), features, rows, 1500, 0.87),
    ]


def profile_reference(features: int, rows: int = PROFILE_ROWS) -> Reference:
    """The training profile, as ``analysis.reference.reference_from_profile`` turns one into a
    Reference: per feature, the bins' counts — here their expected counts under N(0, 1), the
    distribution the stable model goes on serving (a profile without sampling noise of its own)."""
    names = [f"f{i}" for i in range(features)]
    counts = np.round(rows * NORMAL)
    return Reference(f"profile ({rows} training rows)", BucketMatrix.from_bins(names, [EDGES] * features, [counts] * features),
                     BucketMatrix.empty())


def continued(history: Streams, fresh: Streams, keep: int) -> Streams:
    """``fresh``'s scrapes after the last ``keep`` scrape intervals of ``history``: the counters
    carry on (rebased to 0 at the first kept scrape: a window reads differences only)."""
    def join(old: np.ndarray, new: np.ndarray) -> np.ndarray:
        tail = old[-keep - 1:] - old[-keep - 1]
        return np.concatenate([tail, tail[-1] + new[1:]])

    return Streams(*(join(getattr(history, f.name), getattr(fresh, f.name)) for f in fields(Streams)))


@dataclass(frozen=True)
class StableCount:
    """What a stable-track policy did over days of a model that never changed."""

    days: int
    evaluations: int
    failing: int  # evaluations with a Fail
    breaches: int  # every breach is a false action here

    def __add__(self, other: StableCount) -> StableCount:
        return StableCount(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(StableCount)))


def stable_days(rng: np.random.Generator, setting: Setting, days: int) -> StableCount:
    """``days`` consecutive days of a stable track serving N(0, 1) on every feature, evaluated every
    ``interval`` against the profile and decided as the operator does; each breach is counted and
    the streak re-arms as Replay (tick.decide_tick) re-arms it."""
    spec = setting.spec
    interval = int(spec.interval.total_seconds())
    span = int(spec.window.total_seconds()) // SCRAPE_SECONDS
    profile = profile_reference(setting.features)
    replay = Replay(policy_context(spec))
    streams = simulate(rng, setting, span, NORMAL, setting.rows_per_window)  # the window before the first day
    evaluations = failing = 0
    for day in range(days):
        streams = continued(streams, simulate(rng, setting, DAY_SECONDS // SCRAPE_SECONDS, NORMAL, setting.rows_per_window), span)
        for second in range(interval, DAY_SECONDS + 1, interval):
            at = span * SCRAPE_SECONDS + second + SCRAPE_SECONDS // 2  # between scrapes; index ``span`` is the day's start
            observations = Observations(current=window(streams, at // SCRAPE_SECONDS, span, 0), reference=profile)
            now = START + datetime.timedelta(days=day, seconds=second + SCRAPE_SECONDS // 2)
            evaluation = decide(replay, observations, now)
            evaluations += 1
            failing += evaluation.verdict is Verdict.FAIL
    return StableCount(days, evaluations, failing, len(replay.breaches))


def stable_chain(setting: Setting, days: int, seed: np.random.SeedSequence) -> StableCount:
    """One worker's share of the days: a chain of consecutive days of its own."""
    return stable_days(np.random.default_rng(seed), setting, days)


def judge_milliseconds(setting: Setting, calls: int = 200) -> float:
    """How long one judge() call takes on a full window of the stable track against the profile."""
    streams = simulate(np.random.default_rng(0), setting, 2 * int(setting.spec.window.total_seconds()) // SCRAPE_SECONDS,
                       NORMAL, setting.rows_per_window)
    span = int(setting.spec.window.total_seconds()) // SCRAPE_SECONDS
    observations = Observations(current=window(streams, 2 * span, span, 0), reference=profile_reference(setting.features))
    level = evaluation_level(setting.spec, Replay(policy_context(setting.spec)).status, "2")
    started = time.perf_counter()
    for _ in range(calls):
        judge(setting.spec, observations, START, level)
    return (time.perf_counter() - started) / calls * 1000


def poisson_upper(count: int, confidence: float = 0.95) -> float:
    """Exact one-sided upper confidence bound of a Poisson mean after ``count`` events (Garwood)."""
    return float(stats.chi2.ppf(confidence, 2 * count + 2) / 2)


def stable_family(args: argparse.Namespace) -> list[dict]:
    """False actions per day of each stable-track setting, over ``args.stable_days`` days, split into
    ``args.jobs`` independent chains of consecutive days (one per worker process)."""
    table = []
    chains = max(1, min(args.jobs, args.stable_days))
    shares = [args.stable_days // chains + (i < args.stable_days % chains) for i in range(chains)]
    if not args.json:
        print(f"stable track, no change: {args.features} features, {args.rows} rows per window, reference a profile of "
              f"{PROFILE_ROWS} rows, {args.stable_days} simulated days per setting in {chains} chain(s)", flush=True)
    for index, setting in enumerate(stable_settings(args.rows, args.features)):
        started = time.perf_counter()
        milliseconds = judge_milliseconds(setting)
        seeds = np.random.SeedSequence([args.seed, index]).spawn(chains)
        if chains == 1:
            count = stable_chain(setting, shares[0], seeds[0])
        else:
            with ProcessPoolExecutor(chains) as pool:
                count = sum(pool.map(stable_chain, [setting] * chains, shares, seeds), StableCount(0, 0, 0, 0))
        seconds = time.perf_counter() - started
        per_day, upper_per_day = count.breaches / count.days, poisson_upper(count.breaches) / count.days
        row = {"family": "stable", "setting": setting.name, "days": count.days, "evaluations": count.evaluations,
               "failingEvaluations": count.failing, "falseActions": count.breaches, "falseActionsPerDay": per_day,
               "falseActionsPer30Days": 30 * per_day, "upper95Per30Days": 30 * upper_per_day,
               "judgeMilliseconds": round(milliseconds, 2), "seconds": round(seconds, 1)}
        table.append(row)
        if not args.json:
            print(f"{setting.name:30} {count.days:>4} days  {count.evaluations:>7} evaluations  {count.failing:>5} failing  "
                  f"{count.breaches:>3} false actions: {per_day:.4f}/day, {30 * per_day:.3f} per 30 days "
                  f"(95 % upper bound {30 * upper_per_day:.3f})  [judge() {milliseconds:.2f} ms; "
                  f"{seconds * chains / max(count.evaluations, 1) * 1000:.2f} ms per evaluation and worker; {seconds:.0f} s]",
                  flush=True)
    if not args.json:
        defaults = table[0]
        shown = defaults["upper95Per30Days"] <= ACCEPTED_PER_30_DAYS
        needed = poisson_upper(0) * 30 / ACCEPTED_PER_30_DAYS
        print(f"acceptance (at most {ACCEPTED_PER_30_DAYS:g} false action per 30 days on a stable model, defaults): "
              f"{defaults['falseActionsPer30Days']:.3f} per 30 days observed over {defaults['days']} days, 95 % upper bound "
              f"{defaults['upper95Per30Days']:.3f}: "
              + ("shown" if shown else f"not shown at 95 % by this run (with no false action it takes ≥ {needed:.0f} days)"),
              flush=True)
    return table


# Peers on the same rows: Evidently and Alibi Detect. ----------------------------------------------

PEER_PACKAGES = {"evidently": ("evidently", "0.7."), "alibi": ("alibi-detect", "0.13.")}
PEERS_VENV = ("python3.11 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install 'evidently==0.7.*' 'alibi-detect==0.13.*' "
              "numpy scipy pyyaml pydantic prometheus_client promql-parser==0.12.0 'croniter>=6,<8' 'tenacity>=9,<10'")
# The distributions of CHANGES, as rows of feature 0.
RAW_CHANGES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "null": lambda rng, n: rng.standard_normal(n),
    "shift": lambda rng, n: rng.normal(0.2, 1.0, n),
    "scale": lambda rng, n: rng.normal(0.0, np.sqrt(1.3), n),
    "bimodal": lambda rng, n: rng.normal(np.where(rng.random(n) < 0.5, -0.8, 0.8), 0.6),
    "tiny": lambda rng, n: rng.normal(0.01, 1.0, n),
    "tail": lambda rng, n: (lambda x: np.where(x > TOP, x + 3.0, x))(rng.standard_normal(n)),
}
STREAK = 3  # a cron job that acts on this many drift flags in a row (modelwarden: failureThreshold 3)
Signal = tuple[bool, bool | None]  # (flagged at this evaluation, acted by the detector's own rule; None: STREAK flags in a row act)


def bucket_counts(rows: np.ndarray) -> np.ndarray:
    """Per feature, the rows in each (edge[i-1], edge[i]] bin and the +Inf bin: the histogram the
    model server exports for them."""
    bins, features = len(EDGES) + 1, rows.shape[1]
    flat = np.searchsorted(EDGES, rows, side="left") + bins * np.arange(features)
    return np.bincount(flat.ravel(), minlength=bins * features).reshape(features, bins).astype(float)


@dataclass(frozen=True)
class Minute:
    """One track's rows over one minute, and the same rows as exported bucket counts."""

    rows: np.ndarray  # (n, features)
    bins: np.ndarray  # (features, bins)


def served_minute(rng: np.random.Generator, sample: Callable[[np.random.Generator, int], np.ndarray], features: int,
                  rows_per_minute: float) -> Minute:
    """A minute of traffic: Poisson rows, feature 0 drawn by ``sample``, the rest N(0, 1)."""
    count = rng.poisson(rows_per_minute)
    rows = rng.standard_normal((count, features))
    rows[:, 0] = sample(rng, count)
    return Minute(rows, bucket_counts(rows))


class Windows:
    """Both tracks' last window of minutes at one evaluation: the stable track's rows are the
    reference, the canary's (since it was born) the current; each form is built on first use."""

    def __init__(self, stable: Sequence[Minute], canary: Sequence[Minute]) -> None:
        self.stable, self.canary = stable, canary

    @cached_property
    def reference_rows(self) -> np.ndarray:
        return np.concatenate([minute.rows for minute in self.stable])

    @cached_property
    def current_rows(self) -> np.ndarray:
        return np.concatenate([minute.rows for minute in self.canary])

    @cached_property
    def reference_bins(self) -> np.ndarray:
        return sum(minute.bins for minute in self.stable)

    @cached_property
    def current_bins(self) -> np.ndarray:
        return sum(minute.bins for minute in self.canary)


class FirstFlags:
    """When one detector's signal first flagged drift, and when it first acted: by the detector's own
    rule when it has one (modelwarden's breach), else on STREAK flags in a row (minutes; None: never)."""

    def __init__(self) -> None:
        self.once: int | None = None
        self.acted: int | None = None
        self.run = 0

    def observe(self, minute: int, flagged: bool, own_rule_acts: bool | None) -> None:
        self.run = self.run + 1 if flagged else 0
        if flagged and self.once is None:
            self.once = minute
        if self.acted is None and (own_rule_acts if own_rule_acts is not None else self.run >= STREAK):
            self.acted = minute

    @property
    def settled(self) -> bool:
        """Nothing later can change what is reported."""
        return self.once is not None and self.acted is not None


class Detector:
    """A drift decision run on every evaluation's windows; ``start`` gives a rollout's evaluator."""

    name: str
    signals: tuple[str, ...]
    seconds = 0.0  # time spent deciding, over every rollout

    def start(self) -> Callable[[Windows, datetime.datetime], dict[str, Signal]]:
        raise NotImplementedError


class ModelwardenDefaults(Detector):
    """modelwarden's defaults (drift only) on the rows as the model server exports them: a failing
    evaluation flags, the breach (failureThreshold 3, InsufficientData neither counting nor resetting) acts."""

    signals = ("failing evaluation / breach",)

    def __init__(self, features: int) -> None:
        self.name = "modelwarden defaults"
        self.spec = DriftPolicySpec.model_validate(DEFAULTS_POLICY)
        self.names = [f"f{i}" for i in range(features)]

    def histograms(self, bins: np.ndarray) -> BucketMatrix:
        return BucketMatrix.from_bins(self.names, [EDGES] * len(self.names), bins)

    def start(self) -> Callable[[Windows, datetime.datetime], dict[str, Signal]]:
        replay = Replay(policy_context(self.spec))

        def evaluate(windows: Windows, now: datetime.datetime) -> dict[str, Signal]:
            reference = TrackWindow(features=self.histograms(windows.reference_bins))
            observations = Observations(current=TrackWindow(features=self.histograms(windows.current_bins)),
                                        reference=Reference("stable", reference.features, BucketMatrix.empty()), baseline=reference)
            evaluation = decide(replay, observations, now)
            return {self.signals[0]: (evaluation.verdict is Verdict.FAIL, bool(replay.breaches))}

        return evaluate


class EvidentlyDefaults(Detector):
    """Evidently's DataDriftPreset with its defaults, decided as the preset decides but without its
    Report (whose plots cost seconds per run): each column by its ValueDrift — the default test for
    the column's type and the reference's size (numeric, over 1000 reference rows: normed
    Wasserstein ≥ 0.1; else KS p < 0.05) at its default threshold — and the dataset by its
    DriftedColumnsCount test (drifted share ≥ drift_share, 0.5). ``report_agrees`` checks that
    against a real Report."""

    def __init__(self, features: int) -> None:
        from evidently.legacy.calculations.stattests.registry import get_stattest
        from evidently.legacy.core import ColumnType
        from evidently.legacy.options.data_drift import DataDriftOptions
        from evidently.presets import DataDriftPreset

        self.name = f"Evidently {importlib.metadata.version('evidently')} DataDriftPreset"
        self.signals = ("dataset drift", "column f0 drifted")
        self.names = [f"f{i}" for i in range(features)]
        self.get_stattest, self.numerical, self.options = get_stattest, ColumnType.Numerical, DataDriftOptions()
        self.drift_share = DataDriftPreset().drift_share

    def columns_drifted(self, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
        import pandas as pd

        drifted = np.zeros(len(self.names), dtype=bool)
        for i, name in enumerate(self.names):
            before, now = pd.Series(reference[:, i]), pd.Series(current[:, i])
            test = self.get_stattest(before, now, self.numerical, self.options.get_feature_stattest_func(name, self.numerical.value))
            drifted[i] = test(before, now, self.numerical, self.options.get_threshold(name, self.numerical.value)).drifted
        return drifted

    def start(self) -> Callable[[Windows, datetime.datetime], dict[str, Signal]]:
        def evaluate(windows: Windows, now: datetime.datetime) -> dict[str, Signal]:
            drifted = self.columns_drifted(windows.reference_rows, windows.current_rows)
            return {"dataset drift": (bool(drifted.mean() >= self.drift_share), None), "column f0 drifted": (bool(drifted[0]), None)}

        return evaluate

    def report_agrees(self, windows: Windows) -> bool:
        """Whether Report([DataDriftPreset()]) decides every column and the dataset as ``columns_drifted`` does."""
        import pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(numerical_columns=self.names)

        def dataset(rows: np.ndarray) -> Dataset:
            return Dataset.from_pandas(pd.DataFrame(rows, columns=self.names), data_definition=definition)

        snapshot = Report([DataDriftPreset()], include_tests=True).run(dataset(windows.current_rows), dataset(windows.reference_rows))
        tests = [(test["metric_config"]["params"], test["status"].value) for test in snapshot.dict()["tests"]]
        failed = {(params["type"], params.get("column")): status == "FAIL" for params, status in tests}
        drifted = self.columns_drifted(windows.reference_rows, windows.current_rows)
        columns = [failed[("evidently:metric_v2:ValueDrift", name)] for name in self.names]
        dataset = failed[("evidently:metric_v2:DriftedColumnsCount", None)]
        return columns == drifted.tolist() and dataset == (drifted.mean() >= self.drift_share)


class AlibiDefaults(Detector):
    """Alibi Detect's KSDrift with its defaults (p_val 0.05, Bonferroni over the features), the
    stable track's window as x_ref, refitted at every evaluation as a cron job would."""

    def __init__(self, features: int) -> None:
        from alibi_detect.cd import KSDrift

        self.name = f"Alibi Detect {importlib.metadata.version('alibi-detect')} KSDrift"
        self.signals = ("is_drift",)
        self.detector = KSDrift

    def start(self) -> Callable[[Windows, datetime.datetime], dict[str, Signal]]:
        def evaluate(windows: Windows, now: datetime.datetime) -> dict[str, Signal]:
            prediction = self.detector(windows.reference_rows).predict(windows.current_rows)
            return {"is_drift": (bool(prediction["data"]["is_drift"]), None)}

        return evaluate


PEERS: dict[str, type[Detector]] = {"evidently": EvidentlyDefaults, "alibi": AlibiDefaults}


def missing_peers(names: Sequence[str]) -> list[str]:
    """The requested peers that cannot be imported here, each with the reason."""
    missing = []
    for name in names:
        package, series = PEER_PACKAGES[name]
        try:
            version = importlib.metadata.version(package)
            __import__("evidently.presets" if name == "evidently" else "alibi_detect.cd")
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{package} {series}x is not installed for {sys.executable}")
            continue
        except ImportError as exc:  # installed, but it does not import
            missing.append(f"{package} {series}x does not import: {type(exc).__name__}: {exc}")
            continue
        if not version.startswith(series):
            missing.append(f"{package} {series}x: {version} is installed")
    return missing


def peer_rollout(rng: np.random.Generator, sample: Callable[[np.random.Generator, int], np.ndarray], detectors: Sequence[Detector],
                 rows: int, features: int, minutes: int, span: int) -> tuple[dict[tuple[str, str], FirstFlags], list[Windows]]:
    """One canary rollout as raw rows, an evaluation every minute over the last ``span`` minutes
    (sliding: the stable track has a window of history, the canary counts from its birth); each
    detector stops once nothing it reports can change, the rollout once every detector has.
    Returns the flags and the first and last windows evaluated."""
    per_minute = rows / span
    stable = deque((served_minute(rng, RAW_CHANGES["null"], features, per_minute) for _ in range(span)), maxlen=span)
    canary: deque[Minute] = deque(maxlen=span)
    evaluators = {detector.name: detector.start() for detector in detectors}
    flags = {(detector.name, signal): FirstFlags() for detector in detectors for signal in detector.signals}
    first = windows = None
    for minute in range(1, minutes + 1):
        stable.append(served_minute(rng, RAW_CHANGES["null"], features, per_minute))
        canary.append(served_minute(rng, sample, features, per_minute))
        windows = Windows(tuple(stable), tuple(canary))
        first = first or windows
        for detector in detectors:
            if all(flags[(detector.name, signal)].settled for signal in detector.signals):
                continue
            started = time.perf_counter()
            for signal, (flagged, acted) in evaluators[detector.name](windows, START + datetime.timedelta(minutes=minute)).items():
                flags[(detector.name, signal)].observe(minute, flagged, acted)
            detector.seconds += time.perf_counter() - started
        if all(flag.settled for flag in flags.values()):
            break
    assert first is not None and windows is not None, "a rollout of at least one minute"
    return flags, [first, windows]


def share_within(minutes: Sequence[int | None], limit: int) -> float:
    """The share of rollouts in which something happened by minute ``limit`` (None: never)."""
    return sum(minute is not None and minute <= limit for minute in minutes) / len(minutes)


def peers_family(args: argparse.Namespace, peers: Sequence[str]) -> list[dict]:
    """Per scenario, how often each detector flagged and acted within 30 min, 1 h and the rollout,
    all of them on the same rows."""
    detectors: list[Detector] = [ModelwardenDefaults(args.features), *(PEERS[name](args.features) for name in peers)]
    span = int(DriftPolicySpec.model_validate(DEFAULTS_POLICY).window.total_seconds()) // 60
    minutes = int(args.hours * 60)
    rng = np.random.default_rng(args.seed)
    evidently = next((detector for detector in detectors if isinstance(detector, EvidentlyDefaults)), None)
    checked, agreed = [], 0
    table = []
    if not args.json:
        print(f"peers on the same rows: {args.features} features (feature 0 changed), {args.rows} rows per window and track "
              f"(tiny: {args.peers_tiny_rows}), an evaluation every minute over the last {span} minutes (sliding), "
              f"{args.hours:g} h rollouts, {args.runs} runs; acting = {STREAK} flags in a row (modelwarden: its breach)", flush=True)
        print(f"{'scenario':8} {'rows':>8}  {'detector: signal':62} {'flagged within':>19}       {'acted within':>19}", flush=True)
        limits = f"{'30 min':>7} {'1 h':>6} {args.hours:>4g} h"
        print(f"{'':8} {'':8}  {'':62} {limits}   {limits}", flush=True)
    for scenario in args.scenarios.split(","):
        rows = args.peers_tiny_rows if scenario == "tiny" else args.rows
        outcomes = []
        for run in range(args.runs):
            flags, evaluated = peer_rollout(rng, RAW_CHANGES[scenario], detectors, rows, args.features, minutes, span)
            outcomes.append(flags)
            if run == 0 and evidently is not None:  # the fast reading of its defaults, against its Report
                for windows in evaluated:
                    checked.append(scenario)
                    if evidently.report_agrees(windows):
                        agreed += 1
                    else:
                        print(f"warning: {scenario}: Evidently's Report decided a window differently from this benchmark's "
                              "reading of its defaults", file=sys.stderr, flush=True)
        limits = {"30m": 30, "1h": 60, f"{args.hours:g}h": minutes}
        for detector in detectors:
            for signal in detector.signals:
                firsts = [outcome[(detector.name, signal)] for outcome in outcomes]
                flagged = {label: share_within([first.once for first in firsts], limit) for label, limit in limits.items()}
                acted = {label: share_within([first.acted for first in firsts], limit) for label, limit in limits.items()}
                table.append({"family": "peers", "scenario": scenario, "rowsPerWindow": rows, "runs": args.runs,
                              "detector": detector.name, "signal": signal, **{f"flaggedWithin{k}": v for k, v in flagged.items()},
                              **{f"actedWithin{k}": v for k, v in acted.items()}})
                if not args.json:
                    print(f"{scenario:8} {rows:>8}  {detector.name + ': ' + signal:62} "
                          + " ".join(f"{v:6.1%}" for v in flagged.values()) + "   "
                          + " ".join(f"{v:6.1%}" for v in acted.values()), flush=True)
    if not args.json:
        print("seconds deciding, all scenarios: " + ", ".join(f"{d.name} {d.seconds:.0f} s" for d in detectors), flush=True)
        if evidently is not None:
            print(f"Evidently: Report([DataDriftPreset()]) decided every column and the dataset as read here in {agreed} of "
                  f"{len(checked)} windows (the first and last evaluated of each scenario's first rollout)", flush=True)
    return table


def rollouts_family(args: argparse.Namespace) -> list[dict]:
    """The canary rollouts: how often each setting acted within 30 min, 1 h and the rollout."""
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
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="rollouts per setting and scenario")
    parser.add_argument("--hours", type=float, default=2.0, help="length of a rollout")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rows", type=int, default=5000, help="observations per window and track")
    parser.add_argument("--scenarios", default=",".join(CHANGES), help=f"comma-separated, of {', '.join(CHANGES)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stable", action="store_true", help="the stable-track family instead of the rollouts")
    parser.add_argument("--stable-days", type=int, default=15, help="simulated days per stable-track setting (about 6 s a day "
                        "for the defaults and 8 s for the example on one idle core: 15 days take under 4 min)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for --stable (the results depend on it: one chain of days each)")
    parser.add_argument("--peers", nargs="?", const=",".join(PEERS), default=None, metavar="PEER,...",
                        help=f"the peers family instead of the rollouts: {', '.join(PEERS)} (default: both), installed apart: "
                             f"{PEERS_VENV}")
    parser.add_argument("--peers-tiny-rows", type=int, default=100_000,
                        help="rows per window for the tiny scenario under --peers (the rollouts use 1000000; Evidently's Wasserstein "
                             "takes about 20 s per evaluation there)")
    args = parser.parse_args(argv)
    table = []
    if args.peers is not None:
        peers = [name for name in args.peers.split(",") if name]
        unknown = [name for name in peers if name not in PEERS]
        if unknown or not peers:
            parser.error(f"--peers: unknown peer(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(PEERS)}")
        missing = missing_peers(peers)
        if missing:
            print("--peers: " + "; ".join(missing) + "\nThe peers are not the project's dependencies: install them in a venv of "
                  f"their own and run this file with its interpreter:\n  {PEERS_VENV}\n"
                  f"  /tmp/peers-venv/bin/python {Path(__file__).relative_to(ROOT)} --peers", file=sys.stderr)
            return 2
        table += peers_family(args, peers)
    if args.stable:
        table += stable_family(args)
    if args.peers is None and not args.stable:
        table += rollouts_family(args)
    if args.json:
        print(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
