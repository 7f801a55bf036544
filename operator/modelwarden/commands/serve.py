"""`modelwarden serve`: a small, fast HTTP server for a scikit-learn model (joblib, skops or MLflow).

It speaks KServe V1 and the Open Inference Protocol (V2), accepts ground-truth feedback and
exports the metrics contract (see docs/serving.md and docs/metrics.md). One image serves every
track: the operator sets MODEL_URI, MODEL_NAME, MODEL_VERSION and MODEL_TRACK on the pod.

Inference runs inline on the event loop by default: the example pipeline predicts in ~0.2 ms,
and a thread hand-off made p50/p99 worse at 500 req/s (docs/benchmarks.md). Slow models should
use ``--inference-threads N`` so health checks and /metrics stay responsive.

This module is the command line (arguments, environment variables, startup); the server's state
is serving.service (loaded by serving.startup) and its HTTP routes serving.routes.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

from aiohttp import web

from modelwarden.contract import environment as env
from modelwarden.contract.metrics import TRACKS
from modelwarden.serving.limits import DEFAULT_RANGE_FACTOR, MAX_MAGNITUDE
from modelwarden.serving.profile import DEFAULT_MAX_SERIES
from modelwarden.serving.routes import build_app
from modelwarden.serving.service import (
    DEFAULT_FEEDBACK_CACHE,
    DEFAULT_FEEDBACK_CACHE_BYTES,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_FEEDBACK_VERSIONS,
    DEFAULT_PORT,
    ServeConfig,
    StartupError,
)
from modelwarden.serving.startup import load_service
from modelwarden.serving.tokens import DEFAULT_MAX_AGE_SECONDS


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=_env("MODEL_PATH") or _env(env.MODEL_URI),
        help="model directory (model.joblib, model.skops or an MLflow sklearn model), a .joblib or .skops file, "
        f"or a file:// URI [MODEL_PATH, {env.MODEL_URI}]",
    )
    parser.add_argument(
        "--trust-skops-types",
        default=_env("MODEL_SKOPS_TRUSTED", ""),
        metavar="TYPE,...",
        help="types a skops model may hold beyond skops' defaults, comma-separated; a model needing any other "
        "is refused [MODEL_SKOPS_TRUSTED]",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=_env("MODEL_PROFILE"),
        help="reference profile; must exist when given [MODEL_PROFILE; default: profile.json beside the model, "
        "without which the server runs without drift metrics]",
    )
    parser.add_argument("--name", default=_env(env.MODEL_NAME), help=f"model name in URLs and metric labels [{env.MODEL_NAME}]")
    parser.add_argument(
        "--version", default=_env(env.MODEL_VERSION, "unknown"), help=f"model version label [{env.MODEL_VERSION}]"
    )
    parser.add_argument("--track", default=_env(env.MODEL_TRACK, "stable"), help=f"stable|canary|shadow [{env.MODEL_TRACK}]")
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
        "--feedback-cache-bytes",
        type=int,
        default=int(_env("MODELWARDEN_FEEDBACK_CACHE_BYTES", str(DEFAULT_FEEDBACK_CACHE_BYTES)) or 0),
        help="estimated bytes the feedback cache may hold; the oldest requests are evicted first "
        f"[MODELWARDEN_FEEDBACK_CACHE_BYTES; default {DEFAULT_FEEDBACK_CACHE_BYTES} (64 MiB)]",
    )
    parser.add_argument(
        "--value-range-factor",
        type=float,
        default=float(_env("MODELWARDEN_VALUE_RANGE_FACTOR", str(DEFAULT_RANGE_FACTOR)) or 0),
        help="refuse (422) feature and regression feedback values further outside the profile's range than this "
        f"many times its scale; 0: only non-finite values and values beyond ±{MAX_MAGNITUDE:g} are refused "
        f"[MODELWARDEN_VALUE_RANGE_FACTOR; default {DEFAULT_RANGE_FACTOR:g}]",
    )
    parser.add_argument(
        "--feedback-key-file",
        type=Path,
        default=_env(env.FEEDBACK_KEY_FILE),
        help=f"keys for feedback tokens, one per line, the first signs (a mounted Secret) [{env.FEEDBACK_KEY_FILE}]",
    )
    parser.add_argument(
        "--namespace",
        default=_env(env.NAMESPACE, ""),
        help=f"the pod's namespace, named in feedback tokens (the operator sets it from the downward API) [{env.NAMESPACE}]",
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
        "--paired-model",
        default=_env(env.PAIRED_MODEL_PATH) or _env(env.PAIRED_MODEL_URI),
        help="also score every prediction request with this classifier (a shadow: the stable's model) and count "
        "rows per pair of predicted classes in modelwarden_paired_predictions_total, the agreement the operator "
        "reads; a failure of this model never fails a request; same forms as --model; ignored with --no-metrics "
        f"[{env.PAIRED_MODEL_PATH}, {env.PAIRED_MODEL_URI}]",
    )
    parser.add_argument(
        "--paired-version",
        default=_env(env.PAIRED_MODEL_VERSION, "unknown"),
        help=f"the paired model's version, its paired_version label [{env.PAIRED_MODEL_VERSION}]",
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
        feedback_cache_bytes=args.feedback_cache_bytes,
        value_range_factor=args.value_range_factor,
        feedback_key_file=args.feedback_key_file,
        namespace=args.namespace,
        max_feedback_versions=args.max_feedback_versions,
        feedback_token_max_age=args.feedback_token_max_age,
        metrics=not args.no_metrics,
        inference_threads=args.inference_threads,
        max_series=args.max_series,
        trusted_skops_types=tuple(name.strip() for name in args.trust_skops_types.split(",") if name.strip()),
        paired_model=args.paired_model or None,
        paired_version=args.paired_version,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        service = load_service(config)
    except StartupError as exc:
        print(f"modelwarden serve: error: {exc}", file=sys.stderr)
        return 1
    for warning in service.warnings:
        print(f"modelwarden serve: warning: {warning}", file=sys.stderr, flush=True)
    print(
        f"modelwarden serve: {config.name} version {config.version} ({config.track}, {service.runner.task}, "
        f"{service.source}) "
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
