"""What one evaluation records in MLflow (pure): the run it belongs to, its metrics and tags.

One run per (namespace, model, version, policy), found again by its identity tags, so a restarted
operator (or another replica) keeps logging to the same run; metrics are the checks' values at
step = the evaluation's time in whole seconds, so the run's charts are the policy's history; the
verdict is a tag (the latest), the policy's settings are params (logged when the run is created:
MLflow params never change, so a run keeps the settings it began with; the generation is a tag).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

from modelwarden.api.driftpolicy import DriftPolicySpec, Evaluation
from modelwarden.api.duration import format_duration

TAG_PREFIX = "modelwarden.io/"
# MLflow keys: alphanumerics, underscores, dashes, periods, spaces and slashes, at most 250
# characters, and no path that normalises to another ("a//b", "a/../b", "a/"); values are bounded too.
_NOT_A_KEY_CHARACTER = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_KEY = 250
MAX_TAG_VALUE = 5000


@dataclass(frozen=True)
class TrackingRecord:
    experiment: str
    run_name: str
    identity: dict[str, str]  # the tags that find the run again
    params: dict[str, str]  # logged once, when the run is created
    metrics: dict[str, float]
    step: int  # the evaluation's time, whole seconds since the epoch
    timestamp_ms: int
    tags: dict[str, str] = field(default_factory=dict)  # set on every evaluation (the latest wins)


def metric_key(name: str, room: int = MAX_KEY) -> str:
    """An MLflow key for ``name`` within ``room`` characters. A name that had to change (characters
    MLflow refuses, a path MLflow would normalise, too long) gets a short hash of the original, so
    two names never share a key ("a+b" and "a_b" stay apart)."""
    parts = [part.strip() for part in _NOT_A_KEY_CHARACTER.sub("_", name).split("/")]
    key = "/".join(part if part not in ("", ".", "..") else "_" for part in parts)
    if key == name and len(key) <= room:
        return key
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{key[:room - 9]}_{digest}"


def tracking_record(namespace: str, policy: str, generation: int | None, spec: DriftPolicySpec, evaluation: Evaluation,
                    model: str, version: str | None) -> TrackingRecord | None:
    """The record of one persisted evaluation, or None when the policy does not track to MLflow."""
    if spec.tracking is None or spec.tracking.mlflow is None:
        return None
    served = version or "unknown"
    identity = {f"{TAG_PREFIX}{key}": value.replace("'", "_").replace("\\", "_")[:MAX_TAG_VALUE]  # the search filter quotes them
                for key, value in (("namespace", namespace), ("policy", policy), ("model", model), ("version", served))}
    metrics = {metric_key(result.check): float(result.value) for result in evaluation.results
               if result.value is not None and math.isfinite(result.value)}
    if evaluation.samples is not None:
        metrics["samples"] = float(evaluation.samples)
    seconds = evaluation.time.timestamp()
    tags = {f"{TAG_PREFIX}verdict": evaluation.verdict.value, f"{TAG_PREFIX}track": spec.track.value,
            f"{TAG_PREFIX}generation": str(generation or 0)}
    prefix = f"{TAG_PREFIX}check/"
    tags.update({prefix + metric_key(r.check, MAX_KEY - len(prefix)): r.verdict.value for r in evaluation.results})
    return TrackingRecord(
        experiment=spec.tracking.mlflow.experiment or f"modelwarden/{namespace}/{model}",
        run_name=f"{policy} {model} v{served}"[:MAX_KEY], identity=identity, params=_params(spec),
        metrics=metrics, step=int(seconds), timestamp_ms=int(seconds * 1000), tags=tags)


def _params(spec: DriftPolicySpec) -> dict[str, str]:
    """The settings that give the metrics their meaning (MLflow params: at most 6000 characters each)."""
    reference = spec.reference
    kind = "none" if reference is None else "track" if reference.track else "offset" if reference.offset else "profile"
    params = {"track": spec.track.value, "window": format_duration(spec.window), "interval": format_duration(spec.interval),
              "alpha": f"{spec.alpha:g}", "minSamples": str(spec.min_samples), "failureThreshold": str(spec.failure_threshold),
              "reference": kind}
    if spec.drift is not None:
        params["drift.method"] = spec.drift.method.value
    for check in spec.performance:
        bounds = ", ".join(f"{side} {value:g}" for side, value in (("min", check.min), ("max", check.max)) if value is not None)
        params[f"performance.{check.metric.value}" + (f".{check.class_label}" if check.class_label else "")] = bounds
    if spec.agreement is not None:
        params["agreement.minRate"] = f"{spec.agreement.min_rate:g}"
    if spec.outliers is not None:
        params["outliers.maxRate"] = f"{spec.outliers.max_rate:g}"
    return {metric_key(key): value[:6000] for key, value in params.items()}
