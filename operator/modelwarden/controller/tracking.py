"""Recording persisted evaluations in MLflow (DriftPolicy spec.tracking.mlflow), off the policy's tick.

After the status write that persisted an evaluation succeeded, its record (planning.tracking) is
logged in the background: a slow or failing tracking server never delays or changes a decision.
One policy's records go one after another, in order (so one operator never makes two runs of one
version); while one is being logged only the newest waits, an older waiting one is dropped
(outcome `dropped`): memory stays one record per policy however slow MLflow is. At most once: an
operator stopped before the call finishes leaves that evaluation unrecorded (the next one is). A
failure is a Warning Event `TrackingFailed`, posted again only when its message changes, and the
operator metric modelwarden_operator_tracking_total{outcome}.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from modelwarden.controller import telemetry
from modelwarden.controller.config import OperatorConfig
from modelwarden.planning.tracking import TrackingRecord
from modelwarden.registry.base import RegistryError
from modelwarden.registry.mlflow import MlflowRegistry
from modelwarden.registry.mlflow_tracking import MlflowTracker
from modelwarden.registry.sink import EvaluationSink
from modelwarden.retry import RetryPolicy

logger = logging.getLogger(__name__)
TRACKING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="policy-tracking")
TIMEOUT_SECONDS = 10.0
_waiting: dict[tuple[str, str], tuple[dict[str, Any], TrackingRecord]] = {}  # (namespace, policy) -> its newest record
_logging: set[tuple[str, str]] = set()  # policies whose records are being logged now
_background: set[asyncio.Task[None]] = set()
_last_failure: dict[tuple[str, str], str] = {}  # (namespace, policy) -> the failure last announced (Events only)
MAX_REMEMBERED_FAILURES = 4096


def mlflow_sink(config: OperatorConfig) -> EvaluationSink | str:
    """The operator's tracking server as a sink, or why there is none."""
    if not config.mlflow_tracking_uri:
        return "no MLflow tracking server: start the operator with --mlflow-tracking-uri"
    try:
        server = MlflowRegistry(config.mlflow_tracking_uri, token=config.mlflow_tracking_token, timeout=TIMEOUT_SECONDS,
                                retry=RetryPolicy(attempts=1))  # a write is not repeated blindly: the next evaluation is
    except RegistryError as exc:
        return str(exc)
    return MlflowTracker(server)


def record(config: OperatorConfig, reference: dict[str, Any], tracked: TrackingRecord) -> None:
    """Log one persisted evaluation in the background, after the policy's earlier ones."""
    meta = reference["metadata"]
    key = (meta["namespace"], meta["name"])
    if key in _waiting:
        telemetry.record_tracking("dropped")  # a newer evaluation replaces the one still waiting
    _waiting[key] = (reference, tracked)
    if key not in _logging:
        _logging.add(key)
        task = asyncio.create_task(_drain(config, key))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _drain(config: OperatorConfig, key: tuple[str, str]) -> None:
    try:
        while key in _waiting:
            reference, tracked = _waiting.pop(key)
            await _log(config, reference, tracked)
    finally:
        _logging.discard(key)


async def _log(config: OperatorConfig, reference: dict[str, Any], tracked: TrackingRecord) -> None:
    meta = reference["metadata"]
    key = (meta["namespace"], meta["name"])
    sink = mlflow_sink(config)
    try:
        if isinstance(sink, str):
            raise RegistryError(sink)
        run = await asyncio.get_running_loop().run_in_executor(TRACKING, sink.log, tracked)
    except RegistryError as exc:
        telemetry.record_tracking("failed")
        message = f"the evaluation was not recorded in MLflow: {exc}"[:1024]
        if _last_failure.get(key) != message:
            if len(_last_failure) >= MAX_REMEMBERED_FAILURES:  # deleted policies: forget them all, at worst an Event again
                _last_failure.clear()
            _last_failure[key] = message
            kopf.event(reference, type="Warning", reason="TrackingFailed", message=message)
        logger.warning("%s/%s: %s", *key, message)
        return
    telemetry.record_tracking("logged")
    if _last_failure.pop(key, None) is not None:
        kopf.event(reference, type="Normal", reason="TrackingRecovered", message=f"evaluations are recorded in MLflow run {run} again")
