"""`modelwarden run`: start the operator (kopf) with the package's handlers."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import sys
from datetime import timedelta

from modelwarden.api.driftpolicy import SCRAPES_PER_WINDOW
from modelwarden.api.duration import parse_duration
from modelwarden.contract.kubernetes import DEFAULT_IMAGE
from modelwarden.controller.config import (
    ALLOWED_ALERT_HOSTS_ENV,
    ALLOWED_PROMETHEUS_URLS_ENV,
    ALLOWED_REGISTRY_URLS_ENV,
    RESTRICT_CUSTOM_QUERIES_ENV,
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT,
    DEFAULT_NAMESPACE_LABEL,
    DEFAULT_PROMETHEUS_URL,
    METRICS_ADDRESS_ENV,
    METRICS_PORT_ENV,
    POD_MONITOR_MODES,
    POD_MONITORS_ENV,
    SELECTOR_ENV,
    SHARD_ENV,
    parse_shard,
    POLICY_TICK_ENV,
    POLICY_WORKERS_ENV,
    RECONCILE_INTERVAL_ENV,
    SCRAPE_INTERVAL_ENV,
    OperatorConfig,
    env_list,
)
from modelwarden.planning.egress import EgressRules

LOG_FORMATS = ("full", "plain", "json")
LOG_FORMAT_ENV = "MODELWARDEN_LOG_FORMAT"


def configure(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", default=None,
        help="watch this namespace (repeatable; globs like 'ml-*' allowed). Env: WATCH_NAMESPACES=a,b",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument(
        "--prometheus-url", default=os.environ.get("MODELWARDEN_PROMETHEUS_URL", DEFAULT_PROMETHEUS_URL),
        help="default Prometheus-API URL for DriftPolicies without spec.prometheus (env MODELWARDEN_PROMETHEUS_URL)",
    )
    parser.add_argument(
        "--allowed-prometheus-urls", type=url_list, default=url_list(os.environ.get(ALLOWED_PROMETHEUS_URLS_ENV, "")), metavar="URL,...",
        help="URL prefixes a DriftPolicy's spec.prometheus.url may use (default: only --prometheus-url; '*': any); a policy "
             f"pointing elsewhere is an Error verdict and its Secrets are not read (env {ALLOWED_PROMETHEUS_URLS_ENV})",
    )
    parser.add_argument(
        "--restrict-custom-queries", action=argparse.BooleanOptionalAction,
        default=os.environ.get(RESTRICT_CUSTOM_QUERIES_ENV, "true").lower() not in ("false", "0", "no"),
        help="custom checks may only select series of their policy's namespace (an equality matcher on the namespace "
             f"label in every selector; default on; env {RESTRICT_CUSTOM_QUERIES_ENV}=false turns it off)",
    )
    parser.add_argument(
        "--allowed-alert-hosts", type=url_list, default=url_list(os.environ.get(ALLOWED_ALERT_HOSTS_ENV, "*")), metavar="HOST,...",
        help="hosts alerts may go to: webhook, Slack and Alertmanager URLs and the SMTP host, webhook gates and the Airflow "
             "and Kubeflow retraining backends (host or *.domain; default '*': any); an alert to another host fails with "
             f"AlertFailed, a retraining run with RetrainFailed (env {ALLOWED_ALERT_HOSTS_ENV})",
    )
    parser.add_argument(
        "--mlflow-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or None, metavar="URL",
        help="MLflow tracking server that resolves models:/ and runs:/ model URIs of ModelDeployments whose store Secret "
             "names none, and that their pods fetch from (env MLFLOW_TRACKING_URI; its token from MLFLOW_TRACKING_TOKEN)",
    )
    parser.add_argument(
        "--allowed-registry-urls", type=url_list, default=url_list(os.environ.get(ALLOWED_REGISTRY_URLS_ENV, "")),
        metavar="URL,...",
        help="MLflow tracking URIs a ModelDeployment's store Secret may name (default: only --mlflow-tracking-uri; '*': "
             f"any); another is condition ModelResolved=False and is never contacted (env {ALLOWED_REGISTRY_URLS_ENV})",
    )
    parser.add_argument(
        "--namespace-label", type=prometheus_label, default=os.environ.get("MODELWARDEN_NAMESPACE_LABEL", DEFAULT_NAMESPACE_LABEL),
        help="the Prometheus label holding a series' namespace, matched by every built-in query "
             "(default namespace; '' turns it off; env MODELWARDEN_NAMESPACE_LABEL)",
    )
    parser.add_argument(
        "--peering", default=os.environ.get("MODELWARDEN_PEERING") or None, metavar="NAME",
        help="run with kopf peering under this name for HA (one active replica); default: standalone",
    )
    parser.add_argument(
        "--liveness", default=os.environ.get("MODELWARDEN_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="liveness endpoint to serve, http://ADDRESS:PORT/PATH: ADDRESS is the bind address (0.0.0.0 for the "
             "kubelet's probes in a pod; 127.0.0.1 outside one) ('off' to disable; env MODELWARDEN_LIVENESS)",
    )
    parser.add_argument(
        "--default-image", default=os.environ.get("MODELWARDEN_IMAGE", DEFAULT_IMAGE),
        help="model-server image for ModelDeployments without spec.template (env MODELWARDEN_IMAGE)",
    )
    parser.add_argument(
        "--reconcile-interval", type=float, default=float(os.environ.get(RECONCILE_INTERVAL_ENV, "5")),
        help="seconds between level-triggered reconciles of each ModelDeployment (default 5)",
    )
    parser.add_argument(
        "--policy-tick", type=float, default=float(os.environ.get(POLICY_TICK_ENV, "30")),
        help="the longest a DriftPolicy goes without a tick; watch events and due evaluations tick it sooner "
             f"(default 30; env {POLICY_TICK_ENV})",
    )
    parser.add_argument(
        "--scrape-interval", type=scrape_interval, default=os.environ.get(SCRAPE_INTERVAL_ENV, "30s"), metavar="DURATION",
        help=f"how often Prometheus scrapes the model servers (default 30s, prometheus-operator's default); a "
             f"DriftPolicy window shorter than {SCRAPES_PER_WINDOW} of them is InvalidSpec (env {SCRAPE_INTERVAL_ENV})",
    )
    parser.add_argument(
        "--policy-workers", type=int, default=int(os.environ.get(POLICY_WORKERS_ENV, "8")),
        help="DriftPolicy ticks at once; beyond them evaluations run late and say so (EvaluationLagging) "
             f"(default 8; env {POLICY_WORKERS_ENV})",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get(METRICS_PORT_ENV, DEFAULT_METRICS_PORT)),
        help=f"port of the operator's own /metrics (default {DEFAULT_METRICS_PORT}, 0 disables; env {METRICS_PORT_ENV})",
    )
    parser.add_argument(
        "--metrics-address", type=bind_address, default=os.environ.get(METRICS_ADDRESS_ENV, DEFAULT_METRICS_ADDRESS),
        metavar="IP",
        help=f"bind address of the operator's /metrics (default {DEFAULT_METRICS_ADDRESS}: every interface, as Prometheus "
             f"scrapes the pod IP; 127.0.0.1 behind a local proxy or outside a cluster; env {METRICS_ADDRESS_ENV})",
    )
    parser.add_argument(
        "--pod-monitors", type=pod_monitors_mode, default=os.environ.get(POD_MONITORS_ENV, "auto"),
        metavar="{" + ",".join(POD_MONITOR_MODES) + "}",
        help="auto (default): a prometheus-operator PodMonitor per ModelDeployment when the cluster serves "
             f"monitoring.coreos.com/v1 PodMonitor; off: never watch or write PodMonitors (env {POD_MONITORS_ENV})",
    )
    parser.add_argument(
        "--shard", type=shard_arg, default=os.environ.get(SHARD_ENV, ""), metavar="I/N",
        help="own only the ModelDeployments and DriftPolicies whose uid hashes to shard I of N (run N "
             f"processes, I = 0..N-1; combine with --peering per shard for failover; env {SHARD_ENV})",
    )
    parser.add_argument(
        "--selector", type=selector_pairs, default=os.environ.get(SELECTOR_ENV, ""), metavar="KEY[=VALUE],...",
        help="own only the ModelDeployments and DriftPolicies with these labels (KEY alone: any value), e.g. "
             f"shard=a; combine with --shard or run one process per label value (env {SELECTOR_ENV})",
    )
    parser.add_argument(
        "--pod-monitor-labels", type=label_pairs, default=os.environ.get("MODELWARDEN_POD_MONITOR_LABELS", ""),
        metavar="KEY=VALUE,...",
        help="extra labels on every PodMonitor, e.g. release=kube-prometheus-stack for a Prometheus that selects "
             "PodMonitors by release (env MODELWARDEN_POD_MONITOR_LABELS)",
    )
    parser.add_argument(
        "--log-format", type=log_format, default=os.environ.get(LOG_FORMAT_ENV, "full"), metavar="{" + ",".join(LOG_FORMATS) + "}",
        help="full (default): time, logger, level and message; plain: the message; json: one JSON object per line "
             f"for a log pipeline (env {LOG_FORMAT_ENV})",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")


def url_list(value: str) -> tuple[str, ...]:
    """A comma-separated list (URLs or hosts), blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def scrape_interval(value: str | timedelta) -> timedelta:
    try:
        interval = parse_duration(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if interval <= timedelta():
        raise argparse.ArgumentTypeError(f"{value!r}: the scrape interval must be positive")
    return interval


def shard_arg(value: str) -> str:
    try:
        parse_shard(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def bind_address(value: str) -> str:
    """An IPv4/IPv6 address to listen on (not a host name: what is bound must be unambiguous)."""
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP address to listen on") from None


def prometheus_label(value: str) -> str:
    """A Prometheus label name, or "" (no namespace matching)."""
    if value and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Prometheus label name")
    return value


def label_pairs(value: str) -> dict[str, str]:
    """`--pod-monitor-labels release=kps,team=ml` (and the env variable) as a dict."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, label = (part.strip() for part in item.partition("="))
        if not sep or not LABEL_KEY.match(key) or not LABEL_VALUE.match(label):
            raise argparse.ArgumentTypeError(f"{item!r} is not a Kubernetes label key=value")
        pairs[key] = label
    return pairs


LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def selector_pairs(value: str) -> dict[str, str | None]:
    """`--selector shard=a,team` (and the env variable): label equality, or a label's presence."""
    selector: dict[str, str | None] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, label = (part.strip() for part in item.partition("="))
        if not LABEL_KEY.match(key) or (sep and not LABEL_VALUE.match(label)):
            raise argparse.ArgumentTypeError(f"{item!r} is not a label KEY or KEY=VALUE")
        selector[key] = label if sep else None
    return selector


def log_format(value: str) -> str:
    """Checked for the environment's default too (argparse checks `choices` only on the command line)."""
    if value not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_FORMATS)} (--log-format or {LOG_FORMAT_ENV})")
    return value


def pod_monitors_mode(value: str) -> str:
    """`--pod-monitors` and MODELWARDEN_POD_MONITORS (argparse checks a default only through its type)."""
    mode = value.strip().lower()
    if mode not in POD_MONITOR_MODES:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(POD_MONITOR_MODES)}")
    return mode


def build_config(args: argparse.Namespace) -> OperatorConfig:
    namespaces = () if args.all_namespaces else tuple(args.namespaces or env_list("WATCH_NAMESPACES"))
    return OperatorConfig(
        namespaces=namespaces,
        prometheus_url=args.prometheus_url,
        namespace_label=args.namespace_label,
        peering_name=args.peering,
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
        default_image=args.default_image,
        metrics_port=args.metrics_port or None,
        metrics_address=args.metrics_address,
        pod_monitors=args.pod_monitors,
        pod_monitor_labels=args.pod_monitor_labels,
        reconcile_interval=args.reconcile_interval,
        policy_tick=args.policy_tick,
        policy_workers=args.policy_workers,
        scrape_interval=args.scrape_interval,
        shard=parse_shard(args.shard),
        selector=args.selector,
        egress=EgressRules(prometheus_urls=args.allowed_prometheus_urls, alert_hosts=args.allowed_alert_hosts,
                           registry_urls=args.allowed_registry_urls),
        restrict_custom_queries=args.restrict_custom_queries,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
        mlflow_tracking_token=os.environ.get("MLFLOW_TRACKING_TOKEN") or None,
    )


_ROUTINE = re.compile(r"^(Indexer '\w+'|Handler '(wake_\w+|watch_policy)') succeeded\.$")


def _routine_success(record: logging.LogRecord) -> bool:
    """Indexers, wake-ups and policy ticks run on every watch event or every second: their success
    is no news (kopf logs it at INFO); shown with --verbose."""
    return not (record.levelno == logging.INFO and _ROUTINE.match(record.getMessage()))


def run(args: argparse.Namespace) -> int:
    import kopf

    from modelwarden.controller.registry import Memo, build_registry
    from modelwarden.kube.api import unreachable_cluster

    config = build_config(args)
    if (why := unreachable_cluster()) is not None:
        print(f"modelwarden run: {why}", file=sys.stderr)
        return 2
    registry = build_registry(config)
    kopf.configure(verbose=args.verbose, quiet=args.quiet, log_format=kopf.LogFormat[args.log_format.upper()])
    if not args.verbose:
        logging.getLogger("kopf.objects").addFilter(_routine_success)
    logging.getLogger("modelwarden").info("starting: %s", config)
    kopf.run(
        standalone=config.standalone,
        peering_name=config.peering_name,
        clusterwide=config.clusterwide,
        namespaces=config.namespaces,
        liveness_endpoint=config.liveness_endpoint,
        memo=Memo(config=config),
        registry=registry,
    )
    return 0
