"""The operator's own metrics on /metrics (prometheus_client), with bounded cardinality.

Every label set is remembered per policy (and per ModelDeployment) so that deleting the object
removes its series; drift scores keep only the MAX_DRIFT_FEATURES largest per policy.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from modelwarden.analysis.drift import FeatureDrift
from modelwarden.api.driftpolicy import Evaluation

MAX_DRIFT_FEATURES = 50
logger = logging.getLogger(__name__)

EVALUATIONS = Counter("modelwarden_operator_evaluations", "DriftPolicy evaluations by verdict.", ["namespace", "policy", "verdict"])
CHECK_VALUE = Gauge("modelwarden_operator_check_value", "Value of each check at the last evaluation.", ["namespace", "policy", "check"])
DRIFT_SCORE = Gauge(
    "modelwarden_operator_drift_score",
    f"Drift score per feature at the last evaluation (the {MAX_DRIFT_FEATURES} largest per policy): the effect size "
    "(W1 in standard deviations, or total variation) for ks/chi2/combined, the distance for the distance methods.",
    ["namespace", "policy", "check", "feature"],
)
ACTIONS = Counter("modelwarden_operator_actions", "Actions by type and outcome.", ["namespace", "policy", "action", "outcome"])
NOTIFICATIONS = Counter("modelwarden_operator_notifications", "Notifications by channel and outcome.",
                        ["namespace", "policy", "channel", "outcome"])
EVALUATION_DURATION = Histogram("modelwarden_operator_evaluation_duration_seconds", "Duration of one evaluation (queries and statistics).",
                                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
CANARY_WEIGHT = Gauge("modelwarden_operator_canary_weight", "Percent of traffic on the canary track as applied.",
                      ["namespace", "modeldeployment"])
TRACKING = Counter("modelwarden_operator_tracking", "Evaluations recorded in MLflow (spec.tracking), by outcome: logged, failed, dropped (replaced while MLflow was busy).",
                   ["outcome"])
RECONCILES = Counter("modelwarden_operator_reconciles", "ModelDeployment reconciles by outcome: written (status changed), "
                     "unchanged, stale (a view older than our last write: skipped), conflict (409: decided again).",
                     ["outcome"])
STATUS_WRITES = Counter("modelwarden_operator_status_writes", "Conditional status writes by kind and outcome (written, conflict).",
                        ["kind", "outcome"])
PROMETHEUS_QUERIES = Counter("modelwarden_operator_prometheus_queries", "Queries the evaluations asked, by outcome: fetched "
                             "(sent to Prometheus) or shared (answered by an identical query at the same instant).", ["outcome"])

_lock = threading.Lock()
_series: dict[tuple[str, str], set[tuple[object, tuple[str, ...]]]] = defaultdict(set)  # owner -> {(metric, labels)}


def serve(port: int | None, address: str = "0.0.0.0") -> object | None:
    """Start the /metrics server on address:port (returned; None when off); a port in use is logged,
    not fatal (metrics are not the operator's job)."""
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=address)
        logger.info("operator metrics on %s:%d/metrics", address, port)
        return server
    except OSError as exc:
        logger.warning("operator metrics disabled: cannot listen on %s:%d: %s", address, port, exc)
        return None


def _remember(owner: tuple[str, str], metric: object, labels: tuple[str, ...]) -> None:
    with _lock:
        _series[owner].add((metric, labels))


def record_evaluation(namespace: str, policy: str, evaluation: Evaluation, drifts: Iterable[FeatureDrift], seconds: float) -> None:
    owner = (namespace, policy)
    labels = (namespace, policy, evaluation.verdict.value)
    EVALUATIONS.labels(*labels).inc()
    _remember(owner, EVALUATIONS, labels)
    EVALUATION_DURATION.observe(seconds)
    for result in evaluation.results:
        check = (namespace, policy, result.check)
        CHECK_VALUE.labels(*check).set(result.value if result.value is not None else math.nan)
        _remember(owner, CHECK_VALUE, check)
    # One scale per check: `combined` tests each feature by KS or χ², whose statistics do not compare; the effect does.
    scores = [(float(value[i]), d.check, name) for d in drifts
              for value in [d.effect if d.effect is not None else d.statistic]
              for i, name in enumerate(d.names) if d.tested[i] and math.isfinite(float(value[i]))]
    keep = {(namespace, policy, check, name): score for score, check, name in sorted(scores, reverse=True)[:MAX_DRIFT_FEATURES]}
    with _lock:
        stale = {(m, l) for m, l in _series[owner] if m is DRIFT_SCORE and l not in keep}
        _series[owner] -= stale
    for _, old in stale:
        DRIFT_SCORE.remove(*old)
    for key, score in keep.items():
        DRIFT_SCORE.labels(*key).set(score)
        _remember(owner, DRIFT_SCORE, key)


def record_action(namespace: str, policy: str, action: str, outcome: str) -> None:
    labels = (namespace, policy, action, outcome)
    ACTIONS.labels(*labels).inc()
    _remember((namespace, policy), ACTIONS, labels)


def record_notification(namespace: str, policy: str, channel: str, outcome: str) -> None:
    labels = (namespace, policy, channel, outcome)
    NOTIFICATIONS.labels(*labels).inc()
    _remember((namespace, policy), NOTIFICATIONS, labels)


def record_tracking(outcome: str) -> None:
    TRACKING.labels(outcome).inc()


def record_reconcile(outcome: str) -> None:
    RECONCILES.labels(outcome).inc()


def record_query(outcome: str) -> None:
    PROMETHEUS_QUERIES.labels(outcome).inc()


def record_status_write(kind: str, outcome: str) -> None:
    STATUS_WRITES.labels(kind, outcome).inc()


def set_canary_weight(namespace: str, modeldeployment: str, weight: int) -> None:
    CANARY_WEIGHT.labels(namespace, modeldeployment).set(weight)
    _remember(("ModelDeployment", f"{namespace}/{modeldeployment}"), CANARY_WEIGHT, (namespace, modeldeployment))


def forget_policy(namespace: str, policy: str) -> None:
    _forget((namespace, policy))


def forget_modeldeployment(namespace: str, modeldeployment: str) -> None:
    _forget(("ModelDeployment", f"{namespace}/{modeldeployment}"))


def _forget(owner: tuple[str, str]) -> None:
    with _lock:
        series = _series.pop(owner, set())
    for metric, labels in series:
        try:
            metric.remove(*labels)  # type: ignore[attr-defined]
        except KeyError:
            pass
