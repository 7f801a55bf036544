"""The model server's state: configuration, the loaded model and profile, and what requests share.

`modelwarden serve` (commands.serve) builds a :class:`ServeConfig` from its arguments and calls
serving.startup.load_service, which checks the model and its reference profile against each
other before anything listens (a model without a profile beside it serves without drift
metrics); the HTTP layer (serving.routes) hands every request to the one :class:`ModelService`:
predicting, recording metrics, the prediction log, feedback tokens and the per-replica feedback
cache.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import Metric

from modelwarden.contract.metrics import MODEL, TRACK, VERSION, level_key
from modelwarden.contract.profile import Profile
from modelwarden.contract.reasons import ErrorReason
from modelwarden.serving.exposition import feedback_cache_families
from modelwarden.serving.limits import ANY_SQUARABLE, DEFAULT_RANGE_FACTOR, ValueLimits
from modelwarden.serving.model import ModelRunner, Outputs
from modelwarden.serving.monitor import ModelMonitor, NullMonitor
from modelwarden.serving.payload import (
    FeatureSchema,
    FeedbackItem,
    PayloadError,
    require_in_range,
)
from modelwarden.serving.profile import DEFAULT_MAX_SERIES
from modelwarden.serving.tokens import DEFAULT_MAX_AGE_SECONDS, FeedbackTokens, Prediction

if TYPE_CHECKING:
    from modelwarden.serving.paired import PairedScoring

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_FEEDBACK_CACHE = 10_000
DEFAULT_FEEDBACK_CACHE_BYTES = 64 << 20  # 64 MiB: ~320 requests of 25,000 rows, or the 10,000 small ones
DEFAULT_MAX_FEEDBACK_VERSIONS = 8
_V2_DATATYPES = {"i": "INT64", "u": "UINT64", "f": "FP64", "b": "BOOL"}


class StartupError(RuntimeError):
    """The server cannot start; the message is printed as one line."""


class ModelError(Exception):
    """The model raised while predicting: a 500, counted as reason ``model_error``."""

    reason = ErrorReason.MODEL_ERROR
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ServeConfig:
    model_uri: str
    name: str
    version: str = "unknown"
    track: str = "stable"
    profile: Path | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    prediction_log: str = "-"
    feedback_cache_size: int = DEFAULT_FEEDBACK_CACHE
    feedback_cache_bytes: int = DEFAULT_FEEDBACK_CACHE_BYTES
    value_range_factor: float = DEFAULT_RANGE_FACTOR  # serving.limits; 0: only non-finite and overflowing values refused
    feedback_key_file: Path | None = None  # signs and verifies feedback tokens (serving/tokens.py)
    namespace: str = ""  # the pod's namespace (downward API): tokens name it
    max_feedback_versions: int = DEFAULT_MAX_FEEDBACK_VERSIONS
    feedback_token_max_age: int = DEFAULT_MAX_AGE_SECONDS
    metrics: bool = True
    inference_threads: int = 0
    max_series: int = DEFAULT_MAX_SERIES  # refuse a profile that would export more series (0: no limit)
    trusted_skops_types: tuple[str, ...] = ()  # types a skops model may hold beyond skops' defaults
    paired_model: str | None = None  # also score every request with this model (serving.paired)
    paired_version: str = "unknown"  # the paired model's version, its paired_version label


class PredictionLog:
    """One JSON line per prediction request, to stdout, a file, or nowhere."""

    def __init__(self, target: str):
        self._stream: IO[str] | None
        if target == "off":
            self._stream = None
        elif target == "-":
            self._stream = sys.stdout
        else:
            self._stream = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the server

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def write(self, record: dict[str, Any]) -> None:
        if self._stream is not None:
            self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream not in (None, sys.stdout):
            self._stream.close()  # type: ignore[union-attr]


class FeedbackCache:
    """The last requests' predictions by request id, so feedback can name just the request.

    Per replica, and bounded twice, oldest stored first out: by entries (``size``) and by
    estimated bytes (``max_bytes``). Entries alone were no bound on memory: 10,000 requests of
    25,000 rows held 2–8 GB as Python lists. Predictions are kept as the model's numpy array
    (8 bytes a number); an entry larger than the whole budget is not kept. Every entry dropped to
    stay within the bounds is counted in ``evictions``. Feedback that may reach another replica
    should carry a token or echo the prediction (``{"predicted": ..., "actual": ...}``).
    """

    ENTRY_OVERHEAD_BYTES = 200  # the dict slot, the tuple, the array header: measured ≈ 180

    def __init__(self, size: int, max_bytes: int = DEFAULT_FEEDBACK_CACHE_BYTES):
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()

    @classmethod
    def entry_bytes(cls, request_id: str, predicted: np.ndarray) -> int:
        """What one entry costs: the array's buffer, its Python objects (object arrays), the key."""
        held = predicted.nbytes + sys.getsizeof(request_id) + cls.ENTRY_OVERHEAD_BYTES
        if predicted.dtype == object:
            held += sum(sys.getsizeof(value) for value in predicted.tolist())
        return held

    def put(self, request_id: str, predicted: np.ndarray) -> None:
        if self.size <= 0 or self.max_bytes <= 0:
            return
        if predicted.base is not None:
            predicted = predicted.copy()  # a view would keep its whole base alive, uncounted
        self.pop(request_id)
        cost = self.entry_bytes(request_id, predicted)
        if cost > self.max_bytes:
            self.evictions += 1
            return
        self._entries[request_id] = (predicted, cost)
        self.bytes += cost
        while len(self._entries) > self.size or self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
            self.evictions += 1

    def get(self, request_id: str) -> list[Any] | None:
        entry = self._entries.get(request_id)
        return None if entry is None else entry[0].tolist()

    def pop(self, request_id: str) -> None:
        entry = self._entries.pop(request_id, None)
        if entry is not None:
            self.bytes -= entry[1]

    def __len__(self) -> int:
        return len(self._entries)


class FeedbackCacheMetrics:
    """A prometheus_client collector exporting the cache's evictions and size (serving.exposition)."""

    def __init__(self, cache: FeedbackCache, labels: dict[str, str], registry: CollectorRegistry):
        self.cache = cache
        self.labels = labels
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        yield from feedback_cache_families(self.labels, self.cache.evictions, self.cache.bytes)


class ModelService:
    """The model, its profile (None: no drift metrics) and the per-process state every handler shares."""

    def __init__(self, config: ServeConfig, runner: ModelRunner, profile: Profile | None,
                 feature_names: list[str] | None = None, warnings: tuple[str, ...] = (), source: str = ""):
        self.config = config
        self.source = source  # how the model was found ("model.skops", "MLflow sklearn model (cloudpickle)")
        self.runner = runner
        self.profile = profile
        self.warnings = warnings  # printed once at startup
        if profile is not None:
            self.schema = FeatureSchema.from_profile(profile, config.value_range_factor)
            self.classes = [level_key(c) for c in runner.classes] if runner.classes else profile.classes
        else:
            self.schema = FeatureSchema.without_profile(feature_names or [])
            self.classes = [level_key(c) for c in runner.classes or []]
        self.registry = CollectorRegistry()
        # process_start_time_seconds tells the operator a series born inside a window counts from
        # 0 at the process's start (prometheus.queries._window): exact even before its first scrape.
        ProcessCollector(registry=self.registry)
        self.monitor: ModelMonitor | NullMonitor = (
            ModelMonitor(config.name, config.version, config.track, profile, registry=self.registry,
                         task=runner.task, classes=self.classes)
            if config.metrics
            else NullMonitor()
        )
        self.feedback = FeedbackCache(config.feedback_cache_size, config.feedback_cache_bytes)
        if config.metrics:
            labels = {MODEL: config.name, VERSION: str(config.version), TRACK: config.track}
            FeedbackCacheMetrics(self.feedback, labels, self.registry)
        self.tokens = (FeedbackTokens.from_file(config.feedback_key_file, config.feedback_token_max_age)
                       if config.feedback_key_file else None)
        self.log = PredictionLog(config.prediction_log)
        self.executor = ThreadPoolExecutor(config.inference_threads) if config.inference_threads > 0 else None
        self.headers = {"X-Model-Version": config.version, "X-Model-Track": config.track}
        self.paired: PairedScoring | None = None  # set by serving.startup with --paired-model (and metrics)
        classes_kind = np.asarray(runner.classes).dtype.kind if runner.classes else "f"
        self.output_datatype = _V2_DATATYPES.get(classes_kind, "BYTES")

    async def predict(self, rows: np.ndarray) -> Outputs:
        try:
            if self.executor is None:
                return self.runner.predict(rows)
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.runner.predict, rows)
        except Exception as exc:  # noqa: BLE001 - any model failure is one 500 with a reason
            raise ModelError(f"the model failed to predict: {type(exc).__name__}: {exc}") from exc

    def record(self, request_id: str, rows: np.ndarray, outputs: Outputs, started: float) -> list[Any]:
        """Metrics, feedback cache and prediction log for one answered request; returns the predictions."""
        latency = time.perf_counter() - started
        predicted = outputs.predicted.tolist()
        self.monitor.record_prediction(rows, outputs.predicted, latency=latency, scores=outputs.scores)
        self.feedback.put(request_id, outputs.predicted)
        if self.log.enabled:
            record = {
                "request_id": request_id,
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "model": self.config.name,
                "version": self.config.version,
                "track": self.config.track,
                "features": rows.tolist(),
                "output": predicted,
            }
            if outputs.scores is not None:
                record["scores"] = outputs.scores.tolist()
            self.log.write(record)
        return predicted

    def score_paired(self, rows: np.ndarray, outputs: Outputs) -> None:
        """Hand the same rows to the paired model, off the request's path (serving.paired); never raises."""
        if self.paired is not None:
            self.paired.submit(rows, outputs.predicted)

    def token(self, predicted: list[Any]) -> str | None:
        """The feedback token of one answered request (None without a feedback key)."""
        if self.tokens is None:
            return None
        return self.tokens.issue(Prediction(self.config.name, self.config.track, self.config.version, tuple(predicted),
                                            self.config.namespace))

    def resolve_feedback(self, items: list[FeedbackItem]) -> dict[tuple[str, str], tuple[list[Any], list[Any]]]:
        """(predicted, actual) pairs by the (version, track) that predicted them; every item is
        checked (tokens verified, request ids looked up) before any is counted, and request ids
        are consumed only then. On a shadow server, feedback for another track's token is a
        mirrored copy of feedback that the routed track counts: verified, never counted."""
        own = (self.config.version, self.config.track)
        pairs: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
        used: set[str] = set()
        for index, item in enumerate(items):
            if item.token is not None:
                if self.tokens is None:
                    raise PayloadError(ErrorReason.INVALID_TOKEN, f"feedback[{index}]: this server has no feedback "
                                       "key (--feedback-key-file), so it cannot verify tokens", status=400)
                vouched = self.tokens.verify(item.token, self.config.name, self.config.namespace)
                actuals = item.actual if isinstance(item.actual, list) else [item.actual]
                if len(actuals) != len(vouched.predicted):
                    raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"feedback[{index}]: the token vouches for "
                                       f"{len(vouched.predicted)} predictions, got {len(actuals)} actual values")
                if self.runner.task == "regression" and not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in vouched.predicted):
                    raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"feedback[{index}]: the token's predictions "
                                       "are not numbers (a token of another kind of model)")
                if self.config.track == "shadow" and vouched.track != "shadow":
                    continue
                key = (vouched.version, vouched.track)
                if key != own and key not in pairs and not self.monitor.knows_feedback_of(*key) and \
                        self.monitor.feedback_label_sets() >= self.config.max_feedback_versions:
                    raise PayloadError(ErrorReason.FEEDBACK_VERSION_LIMIT,
                                       f"feedback[{index}]: feedback for version {vouched.version!r} "
                                       f"({vouched.track}) would make this server export more than "
                                       f"{self.config.max_feedback_versions} other versions' feedback series "
                                       "(--max-feedback-versions); restart to start over", status=429)
                predicted, actual = pairs.setdefault((vouched.version, vouched.track), ([], []))
                predicted.extend(vouched.predicted)
                actual.extend(actuals)
                continue
            predicted, actual = pairs.setdefault(own, ([], []))
            if item.request_id is None:
                predicted.append(item.predicted)
                actual.append(item.actual)
                continue
            logged = None if item.request_id in used else self.feedback.get(item.request_id)
            if logged is None:
                raise PayloadError(
                    ErrorReason.UNKNOWN_REQUEST_ID,
                    f"feedback[{index}]: request id {item.request_id!r} is not in this replica's prediction log "
                    '(unknown, evicted, or already given feedback); send {"predicted": ..., "actual": ...} instead',
                    status=404,
                )
            actuals = item.actual if isinstance(item.actual, list) else [item.actual]
            if len(actuals) != len(logged):
                raise PayloadError(
                    ErrorReason.INVALID_PAYLOAD,
                    f"feedback[{index}]: request {item.request_id!r} made {len(logged)} predictions, got {len(actuals)} actual values",
                )
            predicted.extend(logged)
            actual.extend(actuals)
            used.add(item.request_id)
        if self.runner.task == "regression":
            for predicted, _ in pairs.values():
                _require_squarable(predicted)
        for request_id in used:
            self.feedback.pop(request_id)
        return pairs

    def close(self) -> None:
        self.log.close()
        if self.paired is not None:
            self.paired.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False)


def _require_squarable(predicted: list[Any]) -> None:
    """Predictions a token or the cache vouches for came from the model, so the profile's range
    does not bind them (a model may extrapolate); they must still not overflow the error sums."""
    values = np.asarray(predicted, dtype=float)
    outside = ~((values >= ANY_SQUARABLE.low) & (values <= ANY_SQUARABLE.high))
    if outside.any():
        position = int(np.argmax(outside))
        require_in_range(float(values[position]), ANY_SQUARABLE, f"the prediction at position {position}",
                         ValueLimits.squarable(0))
