"""`modelwarden serve`: a small, fast HTTP server for a joblib/scikit-learn model.

It speaks KServe V1 and the Open Inference Protocol (V2), accepts ground-truth feedback and
exports the metrics contract (see docs/serving.md and docs/metrics.md). One image serves every
track: the operator sets MODEL_URI, MODEL_NAME, MODEL_VERSION and MODEL_TRACK on the pod.

Inference runs inline on the event loop by default: the example pipeline predicts in ~0.2 ms,
and a thread hand-off made p50/p99 worse at 500 req/s (docs/benchmarks.md). Slow models should
use ``--inference-threads N`` so health checks and /metrics stay responsive.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import re
import sys
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelwarden import __version__
from modelwarden.serving.model import PROFILE_FILE, ModelLoadError, ModelRunner, Outputs, load_runner
from modelwarden.serving.monitor import TRACKS, ModelMonitor, NullMonitor
from modelwarden.serving.payload import (
    FeatureSchema,
    FeedbackItem,
    PayloadError,
    parse_feedback,
    parse_json,
    parse_v1,
    parse_v2,
)
from modelwarden.serving.profile import DEFAULT_MAX_SERIES, Profile, level_key, series_count
from modelwarden.serving.tokens import DEFAULT_MAX_AGE_SECONDS, FeedbackTokens, Prediction, read_keys

DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_FEEDBACK_CACHE = 10_000
REQUEST_ID_HEADER = "X-Request-Id"
FEEDBACK_TOKEN_HEADER = "X-Modelwarden-Feedback-Token"
MAX_TOKEN_HEADER_BYTES = 4096
DEFAULT_MAX_FEEDBACK_VERSIONS = 8
_VALID_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$")
_V2_DATATYPES = {"i": "INT64", "u": "UINT64", "f": "FP64", "b": "BOOL"}
log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The server cannot start; the message is printed as one line."""


class ModelError(Exception):
    """The model raised while predicting: a 500, counted as reason ``model_error``."""

    reason = "model_error"
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
    feedback_key_file: Path | None = None  # signs and verifies feedback tokens (serving/tokens.py)
    namespace: str = ""  # the pod's namespace (downward API): tokens name it
    max_feedback_versions: int = DEFAULT_MAX_FEEDBACK_VERSIONS
    feedback_token_max_age: int = DEFAULT_MAX_AGE_SECONDS
    metrics: bool = True
    inference_threads: int = 0
    max_series: int = DEFAULT_MAX_SERIES  # refuse a profile that would export more series (0: no limit)


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
    """The last N requests' predictions by request id, so feedback can name just the request.

    Bounded (least recently stored entries go first) and per replica: feedback that may reach
    another replica should echo the prediction instead (``{"predicted": ..., "actual": ...}``).
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()

    def put(self, request_id: str, predicted: list[Any]) -> None:
        if self.size <= 0:
            return
        self._entries[request_id] = predicted
        self._entries.move_to_end(request_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, request_id: str) -> list[Any] | None:
        return self._entries.get(request_id)

    def pop(self, request_id: str) -> None:
        self._entries.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._entries)


class ModelService:
    """The model, its profile and the per-process state every handler shares."""

    def __init__(self, config: ServeConfig, runner: ModelRunner, profile: Profile):
        self.config = config
        self.runner = runner
        self.profile = profile
        self.schema = FeatureSchema.from_profile(profile)
        self.registry = CollectorRegistry()
        self.monitor: ModelMonitor | NullMonitor = (
            ModelMonitor(config.name, config.version, config.track, profile, registry=self.registry)
            if config.metrics
            else NullMonitor()
        )
        self.classes = [level_key(c) for c in runner.classes] if runner.classes else profile.classes
        self.feedback = FeedbackCache(config.feedback_cache_size)
        self.tokens = (FeedbackTokens.from_file(config.feedback_key_file, config.feedback_token_max_age)
                       if config.feedback_key_file else None)
        self.log = PredictionLog(config.prediction_log)
        self.executor = ThreadPoolExecutor(config.inference_threads) if config.inference_threads > 0 else None
        self.headers = {"X-Model-Version": config.version, "X-Model-Track": config.track}
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
        self.feedback.put(request_id, predicted)
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
                    raise PayloadError("invalid_token", f"feedback[{index}]: this server has no feedback key "
                                       "(--feedback-key-file), so it cannot verify tokens", status=400)
                vouched = self.tokens.verify(item.token, self.config.name, self.config.namespace)
                actuals = item.actual if isinstance(item.actual, list) else [item.actual]
                if len(actuals) != len(vouched.predicted):
                    raise PayloadError("invalid_payload", f"feedback[{index}]: the token vouches for "
                                       f"{len(vouched.predicted)} predictions, got {len(actuals)} actual values")
                if self.runner.task == "regression" and not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in vouched.predicted):
                    raise PayloadError("invalid_payload", f"feedback[{index}]: the token's predictions are not numbers "
                                       "(a token of another kind of model)")
                if self.config.track == "shadow" and vouched.track != "shadow":
                    continue
                key = (vouched.version, vouched.track)
                if key != own and key not in pairs and not self.monitor.knows_feedback_of(*key) and \
                        self.monitor.feedback_label_sets() >= self.config.max_feedback_versions:
                    raise PayloadError("feedback_version_limit", f"feedback[{index}]: feedback for version "
                                       f"{vouched.version!r} ({vouched.track}) would make this server export more than "
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
                    "unknown_request_id",
                    f"feedback[{index}]: request id {item.request_id!r} is not in this replica's prediction log "
                    '(unknown, evicted, or already given feedback); send {"predicted": ..., "actual": ...} instead',
                    status=404,
                )
            actuals = item.actual if isinstance(item.actual, list) else [item.actual]
            if len(actuals) != len(logged):
                raise PayloadError(
                    "invalid_payload",
                    f"feedback[{index}]: request {item.request_id!r} made {len(logged)} predictions, got {len(actuals)} actual values",
                )
            predicted.extend(logged)
            actual.extend(actuals)
            used.add(item.request_id)
        for request_id in used:
            self.feedback.pop(request_id)
        return pairs

    def close(self) -> None:
        self.log.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False)


# -- HTTP ---------------------------------------------------------------------------------------

SERVICE = web.AppKey("service", ModelService)
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_GIVEN = web.RequestKey("request_id_given", bool)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def _request_context(request: web.Request, handler: Any) -> web.StreamResponse:
    """Request id and model headers on every response; every failure becomes a JSON error."""
    service = request.app[SERVICE]
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request[REQUEST_ID_GIVEN] = bool(_VALID_REQUEST_ID.match(incoming))
    request[REQUEST_ID] = incoming if request[REQUEST_ID_GIVEN] else uuid.uuid4().hex
    try:
        response = await handler(request)
    except (PayloadError, ModelError) as exc:
        service.monitor.record_error(exc.reason)
        response = _error(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        service.monitor.record_error("body_too_large")
        response = _error(
            413, f"request body exceeds the {service.config.max_body_bytes}-byte limit (--max-body-bytes)"
        )
    except web.HTTPException as exc:
        response = _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except Exception:  # noqa: BLE001 - a bug must cost one request, not the server
        log.exception("request %s failed", request[REQUEST_ID])
        service.monitor.record_error("internal_error")
        response = _error(500, f"internal error (request id {request[REQUEST_ID]}); see the server log")
    response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    response.headers.update(service.headers)
    return response


def _check_model_name(request: web.Request) -> ModelService:
    service = request.app[SERVICE]
    name = request.match_info["name"]
    if name != service.config.name:
        raise PayloadError(
            "unknown_model", f"unknown model {name!r}; this server serves {service.config.name!r}", status=404
        )
    return service


async def _read_json(request: web.Request, service: ModelService) -> Any:
    limit = service.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadError(
            "body_too_large",
            f"request body of {request.content_length} bytes exceeds the {limit}-byte limit",
            status=413,
        )
    return parse_json(await request.read())


async def v1_predict(request: web.Request) -> web.Response:
    started = time.perf_counter()
    service = _check_model_name(request)
    rows = parse_v1(await _read_json(request, service), service.schema)
    outputs = await service.predict(rows)
    predicted = service.record(request[REQUEST_ID], rows, outputs, started)
    token = service.token(predicted)
    if token is None:
        return _json({"predictions": predicted})
    return _with_token(_json({"predictions": predicted, "feedbackToken": token}), token)


async def v2_infer(request: web.Request) -> web.Response:
    started = time.perf_counter()
    service = _check_model_name(request)
    doc = await _read_json(request, service)
    rows = parse_v2(doc, service.schema)
    if not request[REQUEST_ID_GIVEN] and isinstance(doc.get("id"), str) and _VALID_REQUEST_ID.match(doc["id"]):
        request[REQUEST_ID] = doc["id"]
    outputs = await service.predict(rows)
    predicted = service.record(request[REQUEST_ID], rows, outputs, started)
    tensors = [{"name": "predict", "datatype": service.output_datatype, "shape": [len(predicted)], "data": predicted}]
    if outputs.scores is not None:
        tensors.append(
            {"name": "score", "datatype": "FP64", "shape": [len(predicted)], "data": outputs.scores.tolist()}
        )
    answer: dict[str, Any] = {
        "model_name": service.config.name,
        "model_version": service.config.version,
        "id": request[REQUEST_ID],
        "outputs": tensors,
    }
    token = service.token(predicted)
    if token is None:
        return _json(answer)
    return _with_token(_json({**answer, "parameters": {"feedbackToken": token}}), token)


def _with_token(response: web.Response, token: str) -> web.Response:
    """The token in a header too, unless it is too long for common proxies and clients (8 KiB header
    limits): a large batch's token is only in the body."""
    if len(token) <= MAX_TOKEN_HEADER_BYTES:
        response.headers[FEEDBACK_TOKEN_HEADER] = token
    return response


async def feedback(request: web.Request) -> web.Response:
    service = _check_model_name(request)
    items = parse_feedback(await _read_json(request, service), service.runner.task, service.classes)
    pairs = service.resolve_feedback(items)
    for (version, track), (predicted, actual) in pairs.items():
        service.monitor.record_feedback(predicted, actual, version=version, track=track)
    return _json({"accepted": sum(len(predicted) for predicted, _ in pairs.values())})


async def v1_model(request: web.Request) -> web.Response:
    service = _check_model_name(request)
    return _json({"name": service.config.name, "ready": True})


async def v2_model(request: web.Request) -> web.Response:
    service = _check_model_name(request)
    inputs = [
        {
            "name": name,
            "datatype": "BYTES" if i in service.schema.categorical and service.schema.text_input else "FP64",
            "shape": [-1],
        }
        for i, name in enumerate(service.schema.names)
    ]
    outputs = [{"name": "predict", "datatype": service.output_datatype, "shape": [-1]}]
    if service.runner.has_scores:
        outputs.append({"name": "score", "datatype": "FP64", "shape": [-1]})
    return _json(
        {
            "name": service.config.name,
            "versions": [service.config.version],
            "platform": "sklearn",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "track": service.config.track,
                "task": service.runner.task,
                "classes": service.classes,
                "matrix_input": {"name": "input", "datatype": "FP64", "shape": [-1, service.schema.width]},
            },
        }
    )


async def v2_model_ready(request: web.Request) -> web.Response:
    _check_model_name(request)
    return _json({"name": request.match_info["name"], "ready": True})


async def live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def ready(request: web.Request) -> web.Response:
    return _json({"ready": True})


async def server_metadata(request: web.Request) -> web.Response:
    return _json({"name": "modelwarden", "version": __version__, "extensions": []})


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if not service.config.metrics:
        return _error(404, "metrics are disabled (--no-metrics)")
    return web.Response(body=generate_latest(service.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(service: ModelService) -> web.Application:
    # Bodies are read whole; aiohttp enforces the limit (+1 so our own check names it first).
    app = web.Application(middlewares=[_request_context], client_max_size=service.config.max_body_bytes + 1)
    app[SERVICE] = service
    app.router.add_post("/v1/models/{name}:predict", v1_predict)
    app.router.add_get("/v1/models/{name}", v1_model)
    app.router.add_post("/v1/models/{name}/feedback", feedback)
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{name}", v2_model)
    app.router.add_get("/v2/models/{name}/ready", v2_model_ready)
    app.router.add_post("/v2/models/{name}/infer", v2_infer)
    app.router.add_post("/v2/models/{name}/feedback", feedback)
    app.router.add_get("/metrics", metrics)

    async def _close(app: web.Application) -> None:
        service.close()

    app.on_cleanup.append(_close)
    return app


# -- startup ------------------------------------------------------------------------------------


def load_service(config: ServeConfig) -> ModelService:
    """Model + profile, checked against each other; any problem is a one-line StartupError."""
    try:
        runner, model_path = load_runner(config.model_uri)
    except ModelLoadError as exc:
        raise StartupError(str(exc)) from exc
    profile_path = config.profile or model_path.parent / PROFILE_FILE
    try:
        profile = Profile.from_json(profile_path.read_bytes())
    except OSError as exc:
        raise StartupError(
            f"cannot read the profile {profile_path}: {exc.strerror} (build one with `modelwarden profile`)"
        ) from exc
    except ValueError as exc:
        first = str(exc).splitlines()
        raise StartupError(f"invalid profile {profile_path}: {' '.join(first[:3])}") from exc
    if profile.prediction.task != runner.task:
        raise StartupError(
            f"the profile describes a {profile.prediction.task} model but {model_path} is a {runner.task} model"
        )
    if runner.n_features is not None and runner.n_features != len(profile.features):
        raise StartupError(
            f"the model takes {runner.n_features} features but the profile lists {len(profile.features)}"
        )
    if config.metrics and config.max_series:
        # Refused here rather than discovered by Prometheus: every pod of every track multiplies it.
        series = series_count(profile)
        if series.total > config.max_series:
            raise StartupError(
                f"the profile {profile_path} would export {series.total} series per server process "
                f"({series.details()}), more than --max-series {config.max_series}: build it with fewer --bins "
                "in `modelwarden profile` (or train on fewer features), or raise --max-series / "
                "MODELWARDEN_MAX_SERIES (0 disables the limit)"
            )
    if config.feedback_key_file is not None:
        try:
            read_keys(config.feedback_key_file)
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot use the feedback key file: {exc}") from exc
    if config.feedback_token_max_age <= 0:
        raise StartupError("--feedback-token-max-age must be positive")
    try:
        return ModelService(config, runner, profile)
    except OSError as exc:
        raise StartupError(f"cannot open the prediction log {config.prediction_log}: {exc.strerror}") from exc


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=_env("MODEL_PATH") or _env("MODEL_URI"),
        help="joblib file, directory or file:// URI [MODEL_PATH, MODEL_URI]",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=_env("MODEL_PROFILE"),
        help="reference profile [MODEL_PROFILE; default: profile.json beside the model]",
    )
    parser.add_argument("--name", default=_env("MODEL_NAME"), help="model name in URLs and metric labels [MODEL_NAME]")
    parser.add_argument(
        "--version", default=_env("MODEL_VERSION", "unknown"), help="model version label [MODEL_VERSION]"
    )
    parser.add_argument("--track", default=_env("MODEL_TRACK", "stable"), help="stable|canary|shadow [MODEL_TRACK]")
    parser.add_argument("--host", default=_env("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(_env("PORT", str(DEFAULT_PORT)) or DEFAULT_PORT), help="[PORT]")
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="larger request bodies get 413"
    )
    parser.add_argument(
        "--prediction-log", default=_env("PREDICTION_LOG", "-"), help="PATH, - (stdout) or off [PREDICTION_LOG]"
    )
    parser.add_argument(
        "--feedback-cache-size",
        type=int,
        default=DEFAULT_FEEDBACK_CACHE,
        help="requests remembered for feedback by request id",
    )
    parser.add_argument(
        "--feedback-key-file",
        type=Path,
        default=_env("MODELWARDEN_FEEDBACK_KEY_FILE"),
        help="keys for feedback tokens, one per line, the first signs (a mounted Secret) [MODELWARDEN_FEEDBACK_KEY_FILE]",
    )
    parser.add_argument(
        "--namespace",
        default=_env("MODELWARDEN_NAMESPACE", ""),
        help="the pod's namespace, named in feedback tokens (the operator sets it from the downward API) [MODELWARDEN_NAMESPACE]",
    )
    parser.add_argument(
        "--max-feedback-versions",
        type=int,
        default=DEFAULT_MAX_FEEDBACK_VERSIONS,
        help="other (version, track) pairs whose token feedback this server counts before refusing more (series bound)",
    )
    parser.add_argument(
        "--feedback-token-max-age",
        type=int,
        default=int(_env("MODELWARDEN_FEEDBACK_TOKEN_MAX_AGE", str(DEFAULT_MAX_AGE_SECONDS)) or DEFAULT_MAX_AGE_SECONDS),
        help="seconds a feedback token stays valid (default 90 days) [MODELWARDEN_FEEDBACK_TOKEN_MAX_AGE]",
    )
    parser.add_argument(
        "--inference-threads", type=int, default=0, help="predict in a thread pool of this size (0: inline)"
    )
    parser.add_argument(
        "--no-metrics", action="store_true", help="do not record or export metrics (benchmark baseline)"
    )
    parser.add_argument(
        "--max-series",
        type=int,
        default=_env("MODELWARDEN_MAX_SERIES", str(DEFAULT_MAX_SERIES)),
        help="refuse to start if the profile would export more Prometheus series per process; 0: no limit "
        f"[MODELWARDEN_MAX_SERIES; default {DEFAULT_MAX_SERIES}]",
    )


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    if not args.model:
        raise StartupError("no model: pass --model or set MODEL_PATH / MODEL_URI")
    if not args.name:
        raise StartupError("no model name: pass --name or set MODEL_NAME")
    if args.track not in TRACKS:
        raise StartupError(f"track {args.track!r} is not one of {list(TRACKS)}")
    if args.max_body_bytes <= 0:
        raise StartupError("--max-body-bytes must be positive")
    if args.max_series < 0:
        raise StartupError("--max-series must be 0 (no limit) or positive")
    return ServeConfig(
        model_uri=args.model,
        name=args.name,
        version=args.version,
        track=args.track,
        profile=args.profile,
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        prediction_log=args.prediction_log,
        feedback_cache_size=args.feedback_cache_size,
        feedback_key_file=args.feedback_key_file,
        namespace=args.namespace,
        max_feedback_versions=args.max_feedback_versions,
        feedback_token_max_age=args.feedback_token_max_age,
        metrics=not args.no_metrics,
        inference_threads=args.inference_threads,
        max_series=args.max_series,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        service = load_service(config)
    except StartupError as exc:
        print(f"modelwarden serve: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"modelwarden serve: {config.name} version {config.version} ({config.track}, {service.runner.task}) "
        f"on http://{config.host}:{config.port}",
        file=sys.stderr,
        flush=True,
    )
    gc.freeze()  # the loaded model and libraries are permanent: keep them out of every collection
    try:
        web.run_app(build_app(service), host=config.host, port=config.port, print=None, access_log=None)
    except OSError as exc:
        print(
            f"modelwarden serve: error: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    return 0
