"""`modelwarden evaluate`: evaluate a DriftPolicy once against Prometheus, outside the cluster.

Exit status: 0 when the verdict is Pass, 1 when Fail, 2 for InsufficientData, Error, bad input,
or any Prometheus answer that could not be read. Scripts gate on these codes, so nothing else may
end the command: an answer that is not a Prometheus API response of the expected shape is that
check's Error (not a traceback, whose exit status 1 would read as Fail), and an evaluation that
stops on an unexpected exception is 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelwarden.analysis.drift import FeatureDrift
from modelwarden.analysis.reference import reference_from_profile
from modelwarden.api.driftpolicy import DriftPolicy, Verdict
from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider
from modelwarden.prometheus.collect import Target, TimedReport, evaluate
from modelwarden.prometheus.errors import MalformedAnswer
from modelwarden.prometheus.provider import InstantVector, MetricProvider, RangeMatrix

EXIT_CODES = {Verdict.PASS: 0, Verdict.WARNING: 0, Verdict.FAIL: 1, Verdict.INSUFFICIENT_DATA: 2, Verdict.ERROR: 2}
EXIT_ERROR = 2  # bad input, an unreadable Prometheus answer, an evaluation that could not finish


class MalformedAnswers:
    """A MetricProvider wrapper: an answer the client cannot decode (``data`` missing or of the
    wrong type, series without ``metric``, a value that is not a number: the client's
    MalformedAnswer, an Error of that check) is remembered in ``malformed``; the exit status is
    then 2 even when another check failed, because the evaluation is incomplete."""

    def __init__(self, inner: MetricProvider) -> None:
        self.inner = inner
        self.malformed: list[str] = []

    def query(self, promql: str, at: datetime | None = None) -> InstantVector:
        return self._guarded(promql, lambda: self.inner.query(promql, at))

    def query_range(self, promql: str, start: datetime, end: datetime, step_seconds: float) -> RangeMatrix:
        return self._guarded(promql, lambda: self.inner.query_range(promql, start, end, step_seconds))

    def _guarded(self, promql: str, call: Any) -> Any:
        try:
            return call()
        except MalformedAnswer:  # the client decodes; anything it cannot read is this error
            self.malformed.append(promql)
            raise


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, type=Path, help="DriftPolicy manifest (YAML or JSON)")
    parser.add_argument("--at", help="evaluation time, RFC3339 (default: now)")
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    add_source_arguments(parser, default_timeout="the policy's, else 10")
    parser.add_argument("--all-features", action="store_true", help="table output: list every feature, not only notable ones")


def add_source_arguments(parser: argparse.ArgumentParser, default_timeout: str) -> None:
    """Where the policy's data comes from and which series are the judged model's (shared with backtest)."""
    parser.add_argument("--prometheus", help="Prometheus-API base URL (default: the policy's spec.prometheus.url)")
    parser.add_argument("--profile", type=Path, help="profile.json for a profileRef reference")
    parser.add_argument("--model", help="model label (default: the policy's targetRef.name)")
    parser.add_argument("--namespace", help="value of {{ namespace }} (default: the manifest's namespace or 'default')")
    parser.add_argument("--namespace-label", default=None,
                        help="match the namespace on this Prometheus label in every built-in query (default: the "
                             "policy's spec.prometheus.namespaceLabel, else none: backfilled or ad-hoc data often has no "
                             "namespace label; the operator itself defaults to 'namespace')")
    parser.add_argument("--version", dest="track_version", help="version label of the judged track (default: any version)")
    parser.add_argument("--timeout", type=float, help=f"seconds per query (default: {default_timeout})")


def source(policy: DriftPolicy, args: argparse.Namespace, timeout: float, **config: Any) -> tuple[PrometheusConfig, Target]:
    """The Prometheus to query and the judged model's series, from the flags and the policy
    (ValueError when no Prometheus URL is known)."""
    spec = policy.spec
    prometheus = spec.prometheus
    url = args.prometheus or (prometheus.url if prometheus else None)
    if not url:
        raise ValueError("--prometheus is required (the policy has no spec.prometheus)")
    settings = PrometheusConfig(url=url, headers=dict(prometheus.headers) if prometheus else {},
                                timeout_seconds=args.timeout or timeout, **config)
    target = Target(
        model=args.model or spec.target_ref.name,
        namespace=args.namespace or policy.metadata.get("namespace") or "default",
        versions={spec.track.value: args.track_version} if args.track_version else {},
        namespace_label=(args.namespace_label if args.namespace_label is not None
                         else (prometheus.namespace_label if prometheus else None)) or None,
    )
    return settings, target


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.filename)
        now = parse_time(args.at, "--at") if args.at else datetime.now(timezone.utc)
        profile = reference_from_profile(args.profile.read_bytes(), f"profile {args.profile.name}") if args.profile else None
    except (OSError, ValueError) as exc:
        print(f"modelwarden evaluate: {exc}", file=sys.stderr)
        return 2
    spec = policy.spec
    try:
        config, target = source(policy, args, spec.prometheus.timeout.total_seconds() if spec.prometheus else 10.0)
    except ValueError as exc:
        print(f"modelwarden evaluate: {exc}", file=sys.stderr)
        return 2
    with PrometheusProvider(config) as provider:
        guarded = MalformedAnswers(provider)
        try:
            timed = evaluate(spec, target, guarded, now, profile)
        except Exception as exc:  # noqa: BLE001 - a crash must never read as Fail (Python's own exit status 1)
            print(f"modelwarden evaluate: the evaluation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    print(_json(timed) if args.output == "json" else _table(timed, args.all_features))
    return exit_code(timed.report.evaluation.verdict, malformed=len(guarded.malformed))


def exit_code(verdict: Verdict, malformed: int = 0) -> int:
    """0 Pass, 1 Fail, 2 InsufficientData or Error; 2 whatever the verdict once an answer was malformed."""
    return EXIT_ERROR if malformed else EXIT_CODES[verdict]


def load_policy(path: Path) -> DriftPolicy:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    policies = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "DriftPolicy"]
    if len(policies) != 1:
        raise ValueError(f"{path}: expected exactly one DriftPolicy, found {len(policies)}")
    return DriftPolicy.model_validate(policies[0])


def parse_time(text: str, flag: str) -> datetime:
    """An RFC3339 instant with its timezone (the flag named in the error)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: not an RFC3339 time (e.g. 2026-11-02T10:00:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError(f"{flag} {text!r}: RFC3339 needs a timezone (e.g. Z or +02:00)")
    return moment


def _features(drift: FeatureDrift) -> list[dict[str, Any]]:
    rows = []
    for i, name in enumerate(drift.names):
        row: dict[str, Any] = {
            "name": name,
            "verdict": drift.verdict_of(i).value,
            "statistic": _number(drift.statistic[i]),
            "referenceSamples": int(drift.reference_samples[i]),
            "currentSamples": int(drift.current_samples[i]),
        }
        if drift.p_value is not None and drift.adjusted_p_value is not None:
            row["pValue"] = _number(drift.p_value[i])
            row["adjustedPValue"] = _number(drift.adjusted_p_value[i])
        rows.append(row)
    return rows


def _json(timed: TimedReport) -> str:
    report = timed.report
    document = {
        "evaluation": report.evaluation.to_wire(),
        "timings": {
            "querySeconds": timed.timings.query,
            "parseSeconds": timed.timings.parse,
            "statisticsSeconds": timed.timings.statistics,
        },
        "drift": [
            {"check": drift.check, "method": drift.method.value, "threshold": drift.threshold, "features": _features(drift)}
            for drift in report.drift
        ],
    }
    return json.dumps(document, indent=2)


def _table(timed: TimedReport, all_features: bool) -> str:
    evaluation = timed.report.evaluation
    t = timed.timings
    lines = [
        f"verdict {evaluation.verdict.value} at {evaluation.time.isoformat()} "
        f"({evaluation.samples if evaluation.samples is not None else 'no'} predictions; "
        f"query {t.query * 1000:.1f} ms, parse {t.parse * 1000:.1f} ms, statistics {t.statistics * 1000:.1f} ms)",
        "",
        _columns(["CHECK", "VERDICT", "VALUE", "THRESHOLD", "SAMPLES", "MESSAGE"]),
    ]
    for check in evaluation.results:
        lines.append(_columns([check.check, check.verdict.value, _fmt(check.value), _fmt(check.threshold), _fmt(check.samples), check.message]))
    for drift in timed.report.drift:
        rows = [row for row in _features(drift) if all_features or row["verdict"] != Verdict.PASS.value]
        hidden = len(drift.names) - len(rows)
        if not rows and not hidden:
            continue
        lines += ["", f"{drift.check}: {drift.method.value} per feature" + (f" ({hidden} passing not shown; --all-features)" if hidden else "")]
        if rows:
            lines.append(_columns(["FEATURE", "VERDICT", "STATISTIC", "P", "ADJUSTED P", "REFERENCE N", "CURRENT N"]))
        for row in rows:
            lines.append(
                _columns([
                    row["name"], row["verdict"], _fmt(row["statistic"]), _fmt(row.get("pValue")),
                    _fmt(row.get("adjustedPValue")), str(row["referenceSamples"]), str(row["currentSamples"]),
                ])
            )
    return "\n".join(lines)


def _columns(cells: list[str]) -> str:
    widths = (28, 17, 11, 11, 11, 11, 0)
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()


def _fmt(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
