"""`modelwarden history POLICY`: a DriftPolicy's evaluation history, printed or as TensorBoard event files.

From the policy's status (the ring buffer of past verdicts and failing checks, the last
evaluation's values) and, with `--prometheus URL`, from the operator's own metrics over
`--since` (every check's value, the largest features' drift scores). `--tensorboard DIR` writes
them with TensorBoard's own event-file writer (one scalar per check and per drifted feature;
`tensorboard --logdir DIR` shows the trends); without it a table is printed.

    modelwarden history fraud-canary -n ml
    modelwarden history fraud-canary -n ml --tensorboard runs/fraud --prometheus http://prometheus:9090 --since 7d
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import defaultdict
from pathlib import Path

from modelwarden.api.duration import parse_duration
from modelwarden.commands.kubectl_plugin import Cluster
from modelwarden.planning.history import Scalar, from_series, from_status
from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider
from modelwarden.prometheus.errors import MetricsError, NoData
from modelwarden.prometheus.queries import escape_label_value

SERIES = {"check": "modelwarden_operator_check_value", "drift": "modelwarden_operator_drift_score"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="the DriftPolicy")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--tensorboard", type=Path, metavar="DIR", help="write TensorBoard event files here instead of printing")
    parser.add_argument("--prometheus", metavar="URL", help="also read the operator's metrics of the policy from this Prometheus")
    parser.add_argument("--since", default="24h", help="how far back --prometheus reads (default 24h)")
    parser.add_argument("--step", default="1m", help="the resolution of --prometheus's range query (default 1m)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="printed form without --tensorboard")


def run(args: argparse.Namespace) -> int:
    try:
        since, step = parse_duration(args.since), parse_duration(args.step)
        if since.total_seconds() <= 0 or step.total_seconds() <= 0:
            raise ValueError(f"--since and --step must be longer than 0 (got {args.since}, {args.step})")
    except ValueError as exc:
        print(f"modelwarden history: {exc}", file=sys.stderr)
        return 2
    try:
        cluster = Cluster(args.kubeconfig, args.context)
        namespace = args.namespace or cluster.default_namespace
        policy = cluster.get("driftpolicies", namespace, args.policy)
    except Exception as exc:  # noqa: BLE001 - no usable kubeconfig or API: one line
        print(f"modelwarden history: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return 1
    if policy is None:
        print(f"modelwarden history: DriftPolicy {namespace}/{args.policy} not found", file=sys.stderr)
        return 1
    points = from_status(policy.get("status") or {})
    if args.prometheus:
        try:
            points += _from_prometheus(args.prometheus, namespace, args.policy, since, step)
        except MetricsError as exc:
            print(f"modelwarden history: {args.prometheus}: {exc}", file=sys.stderr)
            return 1
    if args.tensorboard:
        write_events(args.tensorboard, points)
        tags = sorted({p.tag for p in points})
        print(f"wrote {len(points)} points of {len(tags)} scalars to {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
        return 0
    if args.output == "json":
        print(json.dumps([p.__dict__ for p in sorted(points, key=lambda p: (p.tag, p.step))], indent=2))
        return 0
    print(render(points))
    return 0


def _from_prometheus(url: str, namespace: str, policy: str, since: datetime.timedelta, step: datetime.timedelta) -> list[Scalar]:
    seconds = step.total_seconds()
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    end = datetime.datetime.fromtimestamp(now // seconds * seconds, datetime.timezone.utc)  # points on whole steps
    matchers = f'namespace="{escape_label_value(namespace)}",policy="{escape_label_value(policy)}"'
    points: list[Scalar] = []
    with PrometheusProvider(PrometheusConfig(url=url)) as provider:
        for prefix, metric in SERIES.items():
            try:
                matrix = provider.query_range(f"{metric}{{{matchers}}}", end - since, end, step.total_seconds())
            except NoData:
                continue
            points += from_series(prefix, zip(matrix.labels, (zip(t.tolist(), v.tolist())
                                                               for t, v in zip(matrix.timestamps, matrix.values))))
    return points


def write_events(directory: Path, points: list[Scalar]) -> None:
    """One event file of scalar summaries, in step order (TensorBoard's own writer and protos)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    directory.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(directory))
    try:
        for point in sorted(points, key=lambda p: (p.step, p.tag)):
            value = Summary.Value(tag=point.tag, simple_value=point.value)
            writer.add_event(Event(wall_time=point.wall_time, step=point.step, summary=Summary(value=[value])))
    finally:
        writer.close()


def render(points: list[Scalar]) -> str:
    """One line per scalar: how many points, the first and last time, the last value."""
    by_tag: dict[str, list[Scalar]] = defaultdict(list)
    for point in points:
        by_tag[point.tag].append(point)
    if not by_tag:
        return "no evaluations with a verdict yet"
    lines = [f"{'SCALAR':<48} {'POINTS':>6}  {'FROM':<20} {'TO':<20} LAST"]
    for tag in sorted(by_tag):
        series = sorted(by_tag[tag], key=lambda p: p.step)
        first, last = (datetime.datetime.fromtimestamp(p.step, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                       for p in (series[0], series[-1]))
        lines.append(f"{tag:<48} {len(series):>6}  {first:<20} {last:<20} {series[-1].value:.4g}")
    return "\n".join(lines)
