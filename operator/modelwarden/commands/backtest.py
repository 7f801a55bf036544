"""`modelwarden backtest`: replay a DriftPolicy over past Prometheus data, exactly as the operator would.

Every ``--step`` (default: the policy's interval) from ``--from`` to ``--to`` the policy is
evaluated by the operator's own code (the same queries, minSamples, reference and correction),
with each expression fetched by range queries for the whole range (prometheus.replay) instead of
one instant query per step; each evaluation goes through the operator's decision
(planning.backtest.Replay: failureThreshold, Breached, alert repeats, rollback, retraining and
its cooldown). The report: when it would have alerted, rolled back or retrained; each check's
failing share; with ``--good-until`` the false alarms over the healthy period and, per threshold,
the most sensitive value that would have raised at most one false alarm per 30 days there.

Exit status: 0 when the backtest ran (whatever it found), 2 for bad input or a failed replay.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from modelwarden.analysis.bounds import budgeted_checks
from modelwarden.analysis.drift import DEFAULT_THRESHOLDS, P_VALUE_METHODS, FeatureDrift
from modelwarden.api.checks import DISTANCE_MAXIMA
from modelwarden.analysis.reference import reference_from_profile
from modelwarden.api.driftpolicy import DriftPolicy, Evaluation, Verdict
from modelwarden.api.policystatus import PASSING
from modelwarden.api.duration import format_duration, parse_duration
from modelwarden.commands.evaluate import add_source_arguments, load_policy, parse_time, source
from modelwarden.planning import backtest
from modelwarden.planning.budget import evaluation_level
from modelwarden.planning.notification import AlertContext
from modelwarden.planning.policy import PolicyContext
from modelwarden.prometheus.client import MAX_RESPONSE_BYTES, PrometheusProvider
from modelwarden.prometheus.collect import evaluate
from modelwarden.prometheus.replay import DEFAULT_POINTS_PER_QUERY, Grid, RangeReplay, grid_step

EXIT_ERROR = 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, type=Path, help="DriftPolicy manifest (YAML or JSON)")
    parser.add_argument("--from", dest="start", required=True, help="first evaluation, RFC3339")
    parser.add_argument("--to", dest="end", required=True, help="last evaluation at or before this, RFC3339")
    parser.add_argument("--step", help="time between evaluations, e.g. 1m (default: the policy's interval)")
    parser.add_argument("--good-until", help="RFC3339: the range up to here was healthy; report its false alarms "
                                              "and the thresholds that would have kept them to one per 30 days")
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    parser.add_argument("--plot", type=Path, help="write a PNG: each check's value against its threshold, actions marked")
    add_source_arguments(parser, default_timeout="60")
    parser.add_argument("--max-points", type=int, default=DEFAULT_POINTS_PER_QUERY,
                        help="points per range query at most (series x steps); longer ranges are fetched in chunks")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="a progress bar on stderr (auto: when stderr is a terminal)")


@dataclass
class Trace:
    """What the report needs of every evaluation, kept compact (a month at 1m is 43 200 of them).

    ``criticals`` has one entry per evaluation for every check a threshold is suggested for, in
    order (None where the check had no value), so the healthy period is always the first entries."""

    suggested: tuple[str, ...]  # the checks thresholds are suggested for
    drift_share: float | None
    budgeted: int = 1  # the policy's statistical checks, which split each look's level (analysis.bounds)
    times: list[datetime] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)  # check -> value per evaluation (NaN: none)
    thresholds: dict[str, float] = field(default_factory=dict)
    criticals: dict[str, list[backtest.Critical]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # "check: message" of Error results -> how many (first 10 kinds)

    def add(self, evaluation: Evaluation, drift: Iterable[FeatureDrift]) -> None:
        index = len(self.times)
        self.times.append(evaluation.time)
        reports = {report.check: report for report in drift}
        results = {result.check: result for result in evaluation.results}
        for result in evaluation.results:
            series = self.values.setdefault(result.check, [math.nan] * index)
            series.append(math.nan if result.value is None else result.value)
            if result.threshold is not None:
                self.thresholds.setdefault(result.check, result.threshold)
            if result.verdict == Verdict.ERROR:
                problem = f"{result.check}: {result.message}"[:300]
                if problem in self.errors or len(self.errors) < 10:
                    self.errors[problem] = self.errors.get(problem, 0) + 1
        for series in self.values.values():  # a check absent from this evaluation
            if len(series) == index:
                series.append(math.nan)
        level = evaluation.level / self.budgeted if evaluation.level is not None else None  # each statistical check's
        for check in self.suggested:
            result = results.get(check)
            if result is None or not (result.verdict in PASSING or result.verdict == Verdict.FAIL):
                critical = backtest.Critical(None, False)  # no value, InsufficientData or Error: neither fails nor resets
            elif check in reports:
                critical = _drift_critical(reports[check], self.drift_share if check == "drift/features" else None, level)
            elif check.startswith("comparison/"):  # fails iff p < min(alpha, level): an alpha above level changes nothing
                below = result.value is not None and (level is None or result.value < level)
                critical = backtest.Critical(result.value if below else None, True)
            else:
                critical = backtest.Critical(result.value, True)
            self.criticals.setdefault(check, []).append(critical)
            if check not in reports and not check.startswith("comparison/"):
                # A proportion fails on its confidence bound: a min iff min > the upper bound, a max iff max < the lower.
                bounded = result is not None and result.upper_bound is not None and critical.value is not None
                for side, bound in (("min", result.upper_bound if bounded else None), ("max", result.lower_bound if bounded else None)):
                    self.criticals.setdefault(f"{check}|{side}", []).append(backtest.Critical(bound, True) if bounded else critical)


def _drift_critical(report: FeatureDrift, drift_share: float | None, level: float | None) -> backtest.Critical:
    """The threshold at which this drift check flips: the k-th most extreme tested feature (k
    drifted features fail it: 1, or the fewest whose share reaches driftShare, by the verdict's own
    comparison). A p-value method's threshold only caps the look's level, and a feature below the
    effect floor never drifts: those never fail, whatever the threshold."""
    tested = report.tested
    count = int(tested.sum())
    if not count:
        return backtest.Critical(None, False)
    k = 1
    if drift_share:
        k = next(n for n in range(1, count + 1) if n / count >= drift_share) if drift_share <= 1 else count
    clean = not (~tested).any()  # with untested features a non-failing verdict is InsufficientData, not a Pass
    if report.adjusted_p_value is not None:  # drifted iff adjusted p < min(θ, level): fails iff θ > the k-th smallest
        eligible = tested & (report.effect >= report.min_effect) if report.effect is not None else tested
        ordered = np.sort(report.adjusted_p_value[eligible])
        if ordered.size < k:
            return backtest.Critical(None, clean)
        critical = float(ordered[k - 1])
        return backtest.Critical(critical if level is None or critical < level else None, clean)
    ordered = np.sort(report.statistic[tested])[::-1]  # drifted iff statistic >= θ: fails iff θ <= the k-th largest
    return backtest.Critical(float(np.nextafter(ordered[k - 1], np.inf)), clean)


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.filename)
        start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
        good_until = parse_time(args.good_until, "--good-until") if args.good_until else None
        step = grid_step(policy.spec.interval, parse_duration(args.step) if args.step else None)
        grid = Grid.between(start, end, step)
        profile = reference_from_profile(args.profile.read_bytes(), f"profile {args.profile.name}") if args.profile else None
        if args.max_points < 1:
            raise ValueError("--max-points must be at least 1")
        reference = policy.spec.reference
        if reference is not None and reference.profile_ref is not None and profile is None:
            raise ValueError("the policy's reference is a profileRef: give the profile with --profile")
    except (OSError, ValueError) as exc:
        print(f"modelwarden backtest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 - only checked here; imported for real when plotting
        except ImportError:
            print("modelwarden backtest: --plot needs matplotlib (pip install 'modelwarden[plot]')", file=sys.stderr)
            return EXIT_ERROR
    spec = policy.spec
    try:
        # A chunk's answer is about 25 bytes per point: allow the chunk size --max-points asks for.
        config, target = source(policy, args, 60.0, max_response_bytes=max(MAX_RESPONSE_BYTES, 64 * args.max_points))
    except ValueError as exc:
        print(f"modelwarden backtest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    namespace, url = target.namespace, config.url
    name = policy.metadata.get("name") or "backtest"
    ctx = PolicyContext(
        name=name, namespace=namespace, uid="backtest", spec=spec, generation=1, created=None,
        alert=AlertContext(policy=name, namespace=namespace, modeldeployment=spec.target_ref.name, model=target.model,
                           track=spec.track.value, version=args.track_version, prometheus_url=url),
    )
    replay = backtest.Replay(ctx)
    tunable = backtest.threshold_fields(spec)
    drift_checks = (["drift/features"] + (["drift/prediction"] if spec.drift.predictions else [])) if spec.drift else []
    trace = Trace(tuple(drift_checks) + tuple(tunable), spec.drift.drift_share if spec.drift else None, budgeted_checks(spec))
    started = time.perf_counter()
    with PrometheusProvider(config) as provider:
        replayed = RangeReplay(provider, grid, args.max_points)
        try:
            for index in _progress(range(grid.steps), args.progress):
                level = evaluation_level(spec, replay.status, args.track_version)  # as the operator spends spec.alpha
                report = evaluate(spec, target, replayed, grid.at(index), profile, level).report
                replay.observe(report.evaluation)
                trace.add(report.evaluation, report.drift)
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            print(f"modelwarden backtest: the replay failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    document = _report(policy, grid, replay, trace, tunable, good_until, replayed, time.perf_counter() - started)
    if grid.step != spec.interval:
        document["note"] = (f"evaluated every {format_duration(grid.step)}, the policy every {format_duration(spec.interval)}: "
                            "failureThreshold counts these evaluations")
    if args.plot is not None:
        from modelwarden.commands.backtest_plot import plot

        plot(args.plot, trace, replay.actions, name)
        document["plot"] = str(args.plot)
    print(json.dumps(document, indent=2) if args.output == "json" else _table(document))
    if replayed.failed:
        first = replayed.failed[0]
        print(f"modelwarden backtest: incomplete: {len(replayed.failed)} range queries failed (their evaluations are "
              f"Errors), the first for {_rfc3339(first[0])}..{_rfc3339(first[1])}: {first[2]}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _progress(steps: range, mode: str) -> Iterable[int]:
    if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc="evaluations", unit="eval", file=sys.stderr, mininterval=0.5)


def _report(policy: DriftPolicy, grid: Grid, replay: backtest.Replay, trace: Trace,
            tunable: dict[str, list[backtest.Bound]], good_until: datetime | None, replayed: RangeReplay,
            seconds: float) -> dict[str, Any]:
    spec = policy.spec
    document: dict[str, Any] = {
        "policy": policy.metadata.get("name"),
        "from": _rfc3339(grid.start),
        "to": _rfc3339(grid.at(grid.steps - 1)),
        "step": format_duration(grid.step),
        "evaluations": grid.steps,
        "verdicts": {verdict.value: sum(v == verdict for _, v in replay.timeline) for verdict in Verdict},
        "actions": [action.to_wire() for action in replay.actions],
        "breaches": [_rfc3339(t) for t in replay.breaches],
        "checks": [share.to_wire() for share in backtest.check_shares(replay)],
        "queries": {"range": replayed.range_queries, "count": replayed.count_queries},
        "failedRangeQueries": [{"from": _rfc3339(a), "to": _rfc3339(b), "error": why} for a, b, why in replayed.failed],
        "errors": [{"error": problem, "evaluations": count} for problem, count in trace.errors.items()],
        "seconds": round(seconds, 3),
    }
    if good_until is not None:
        alarms = backtest.false_alarms(replay, good_until, grid.step)
        document["goodUntil"] = _rfc3339(good_until)
        document["falseAlarms"] = alarms.to_wire()
        document["thresholds"] = [s.to_wire() for s in _suggestions(spec, trace, good_until, alarms.days)]
    return document


def _suggestions(spec: Any, trace: Trace, good_until: datetime, days: float) -> list[backtest.Suggestion]:
    healthy = sum(1 for t in trace.times if t <= good_until)
    allowed = backtest.allowed_breaches(days)
    fields = backtest.threshold_fields(spec)
    found = []
    for check, criticals in trace.criticals.items():
        if "|" in check:  # a proportion's bound side, read with its check below
            continue
        window = criticals[:healthy]
        if check.startswith("drift/") and spec.drift is not None:
            method = spec.drift.method
            p_value = method in P_VALUE_METHODS
            # Unset on a p-value method: no cap, the look's share of spec.alpha alone decides.
            unset_cap = p_value and spec.drift.threshold is None
            current = None if unset_cap else (spec.drift.threshold if spec.drift.threshold is not None else DEFAULT_THRESHOLDS[method])
            note = "a significance level (adjusted p); it caps each look's share of spec.alpha" if p_value else f"a {method.value} distance"
            valid = (0.0, math.nextafter(1.0, 0.0)) if p_value else (0.0, DISTANCE_MAXIMA.get(method.value, math.inf))
            found.append(backtest.suggest(check, "spec.drift.threshold", current, window, fails_above=not p_value,
                                          failure_threshold=spec.failure_threshold, allowed=allowed, note=note, valid=valid,
                                          effective=valid[1] if unset_cap else None))
        for bound in fields.get(check, []):
            side = trace.criticals.get(f"{check}|{'max' if bound.fails_above else 'min'}")
            found.append(backtest.suggest(check, bound.field, bound.current, side[:healthy] if side else window, bound.fails_above,
                                          spec.failure_threshold, allowed, valid=bound.valid))
    return found


def _table(document: dict[str, Any]) -> str:
    verdicts = ", ".join(f"{count} {verdict}" for verdict, count in document["verdicts"].items() if count)
    lines = [
        f"backtest of {document['policy']} from {document['from']} to {document['to']} every {document['step']}: "
        f"{document['evaluations']} evaluations ({verdicts}); {document['queries']['range']} range queries; "
        f"{document['seconds']:.1f}s",
        "",
    ]
    if document["actions"]:
        lines.append(_columns(["TIME", "ACTION", "CHECKS"]))
        for action in document["actions"]:
            detail = f" ({action['detail']})" if action.get("detail") and action["action"] == "alert" else ""
            lines.append(_columns([action["time"], action["action"] + detail, ", ".join(action["checks"]) or "-"]))
    else:
        lines.append("no action: the policy would never have alerted, rolled back or retrained in this range")
    if "note" in document:
        lines.append(f"note: {document['note']}")
    for failed in document["failedRangeQueries"]:
        lines.append(f"range query failed for {failed['from']}..{failed['to']}: {failed['error']}")
    for error in document["errors"]:
        lines.append(f"Error in {error['evaluations']} evaluations: {error['error']}")
    lines += ["", _columns(["CHECK", "EVALUATIONS", "FAILED", "SHARE"])]
    for check in document["checks"]:
        lines.append(_columns([check["check"], str(check["evaluations"]), str(check["failed"]), f"{check['share']:.2%}"]))
    if "falseAlarms" in document:
        alarms = document["falseAlarms"]
        lines += ["", f"healthy until {document['goodUntil']} ({alarms['days']:.2f} days, {alarms['evaluations']} evaluations): "
                      f"{alarms['failingEvaluations']} failing evaluations ({alarms['perEvaluation']:.2%} per evaluation), "
                      f"{alarms['breaches']} false alarms ({alarms['perDay']:.3g} per day)"]
        if document["thresholds"]:
            lines += ["", _columns(["CHECK", "FIELD", "CURRENT", "SUGGESTED", "NOTE"])]
            for s in document["thresholds"]:
                lines.append(_columns([s["check"], s["field"], _fmt(s["current"]), _fmt(s["suggested"]),
                                       s.get("note", "") + f" (≤ {s['allowedBreaches']} false alarms; "
                                       f"{s['breachesAtCurrent']} at the current value)"]))
    return "\n".join(lines)


def _columns(cells: list[str]) -> str:
    widths = (28, 30, 12, 12, 0)
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

