"""`modelwarden profile`: build a reference profile from a training CSV (and optionally the model).

Every column except the target is a feature, in file order (the order the model was trained
on). Columns are numeric unless listed in ``--categorical``; empty or non-finite cells are an
error rather than silently dropped, because the model would never have been trained on them.
The profile is built by :func:`modelwarden.serving.profile.build_profile_from_csv`.

It also reports on stderr (stdout may carry the profile) how many Prometheus series one
`modelwarden serve` process will export for the profile: features × buckets is what grows. For a
binary classifier with scores it warns when the label-free estimated_* checks of a DriftPolicy
would refuse the profile: no calibration could be recorded (the target column does not hold the
model's classes), or the scores are not calibrated within the default maxCalibrationError.

With ``--mlflow-run RUN_ID`` the profile is also logged as the ``profile.json`` artifact of that
MLflow run, where `modelwarden fetch-model` finds it beside the run's registered model versions
(the tracking server from ``--mlflow-tracking-uri`` or MLFLOW_TRACKING_URI; credentials from
mlflow's own environment variables, e.g. MLFLOW_TRACKING_TOKEN).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modelwarden.analysis.estimated import METRICS, ScoreCalibration
from modelwarden.api.checks import DEFAULT_MAX_CALIBRATION_ERROR
from modelwarden.serving.model import ModelLoadError, PROFILE_FILE
from modelwarden.contract.profile import DEFAULT_Z_SCORE, Profile
from modelwarden.serving.profile import (
    DEFAULT_BINS,
    DEFAULT_MAX_SERIES,
    DEFAULT_THRESHOLD,
    ProfileError,
    build_profile_from_csv,
    series_count,
)
from modelwarden.serving.sharededges import on_edges_of


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="training data as CSV with a header row")
    parser.add_argument("--target", required=True, help="the label column (excluded from the features)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile buckets per numeric column")
    parser.add_argument("--categorical", default="", help="comma-separated categorical columns")
    parser.add_argument(
        "--model",
        help="model (as `modelwarden serve --model` takes it: joblib, skops or MLflow): profile its predictions "
        "(else the target column)",
    )
    parser.add_argument(
        "--trust-skops-types",
        default=os.environ.get("MODEL_SKOPS_TRUSTED") or "",
        metavar="TYPE,...",
        help="types a skops --model may hold beyond skops' defaults, comma-separated, as for `modelwarden serve`; "
        "a model needing any other is refused [MODEL_SKOPS_TRUSTED]",
    )
    parser.add_argument("--task", choices=("classification", "regression"), help="override the inferred task")
    parser.add_argument(
        "--z-score", type=float, default=DEFAULT_Z_SCORE, help="outlier threshold stored in the profile"
    )
    parser.add_argument(
        "--decision-threshold", type=float, default=DEFAULT_THRESHOLD, metavar="SCORE",
        help="binary classifiers: the score above which positiveClass is predicted (default 0.5, what "
        "`modelwarden serve` predicts with; another value only describes a server that applies it itself); "
        "made a score edge, and the calibration is computed at it",
    )
    parser.add_argument(
        "--edges-from", type=Path, metavar="PROFILE",
        help="count numeric features and prediction values on this profile's bucket edges (the stable's, for a retrained "
        "model: a DriftPolicy comparing the two tracks needs the same edges)",
    )
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.add_argument("--mlflow-run", metavar="RUN_ID", help=f"also log the profile as the {PROFILE_FILE} artifact of this MLflow run")
    parser.add_argument(
        "--mlflow-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="the MLflow tracking server for --mlflow-run (default: $MLFLOW_TRACKING_URI)",
    )


def run(args: argparse.Namespace) -> int:
    if args.mlflow_run and not args.mlflow_tracking_uri:
        print("modelwarden profile: error: --mlflow-run needs --mlflow-tracking-uri or MLFLOW_TRACKING_URI", file=sys.stderr)
        return 1
    categorical = frozenset(c.strip() for c in args.categorical.split(",") if c.strip())
    try:
        profile = build_profile_from_csv(
            args.data,
            args.target,
            bins=args.bins,
            categorical=categorical,
            model=args.model,
            task=args.task,
            z_score=args.z_score,
            trusted_skops_types=trusted_types(args.trust_skops_types),
            threshold=args.decision_threshold,
        )
        if args.edges_from is not None:
            other = Profile.from_json(args.edges_from.read_text())
            profile = on_edges_of(profile, other, args.data, args.model, trusted_types(args.trust_skops_types))
    except (ProfileError, ModelLoadError, OSError, ValueError) as exc:
        print(f"modelwarden profile: error: {exc}", file=sys.stderr)
        return 1
    if args.output is None:
        print(profile.to_json())
    else:
        args.output.write_text(profile.to_json() + "\n")
    print(_series_line(profile), file=sys.stderr)
    warning = calibration_warning(profile)
    if warning:
        print(f"modelwarden profile: warning: {warning}", file=sys.stderr)
    if args.mlflow_run:
        error = _log_to_mlflow(profile, args.mlflow_run, args.mlflow_tracking_uri)
        if error:
            print(f"modelwarden profile: error: could not log {PROFILE_FILE} to MLflow run {args.mlflow_run}: {error}",
                  file=sys.stderr)
            return 1
        print(f"logged {PROFILE_FILE} to MLflow run {args.mlflow_run}", file=sys.stderr)
    return 0


def trusted_types(listed: str) -> tuple[str, ...]:
    """``--trust-skops-types`` split as `modelwarden serve` splits it, so both accept the same value."""
    return tuple(name.strip() for name in listed.split(",") if name.strip())


def _log_to_mlflow(profile: Profile, run_id: str, tracking_uri: str) -> str | None:
    """Log the profile as the run's artifact; None, or why not in one line (never the token)."""
    try:
        from mlflow import MlflowClient  # seconds to import: only with --mlflow-run

        MlflowClient(tracking_uri=tracking_uri).log_text(run_id, profile.to_json() + "\n", PROFILE_FILE)
    except Exception as exc:  # mlflow, requests and OS errors alike
        message = " ".join(str(getattr(exc, "message", "") or exc).split()) or type(exc).__name__
        for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD"):
            if os.environ.get(name):
                message = message.replace(os.environ[name], "***")
        return message[:400]
    return None


def _series_line(profile: Profile) -> str:
    """One line: the series count, and a warning when `modelwarden serve` would refuse it by default."""
    series = series_count(profile)
    line = f"series per server process: {series}"
    if series.total > DEFAULT_MAX_SERIES:
        line += (
            f"; more than the default --max-series {DEFAULT_MAX_SERIES} of `modelwarden serve`: "
            "use fewer --bins (or train on fewer features), or raise --max-series"
        )
    return line


def calibration_warning(profile: Profile) -> str | None:
    """For a binary classifier with scores: why the estimated_* checks would refuse the profile
    at the default maxCalibrationError, or None when they would not."""
    prediction = profile.prediction
    if prediction.score is None or prediction.positive_class is None:
        return None
    if prediction.calibration is None:
        return (
            f"no calibration recorded: the target column {profile.target!r} holds values that are not the model's "
            f"classes {prediction.levels}, so the estimated_* checks of a DriftPolicy will refuse this profile"
        )
    calibration = ScoreCalibration.from_profile(profile)
    refusals = {gap.metric: gap for metric in METRICS for gap in calibration.refusals(metric, DEFAULT_MAX_CALIBRATION_ERROR)}
    if not refusals:
        return None
    gaps = ", ".join(
        f"{gap.metric} undefined" if gap.expected is None or gap.realised is None
        else f"{gap.metric} {gap.expected:.4f} from the scores vs {gap.realised:.4f} from the labels"
        for gap in refusals.values()
    )
    return (
        f"the scores are not calibrated within {DEFAULT_MAX_CALIBRATION_ERROR:g} on these {calibration.reference_rows} rows "
        f"({gaps}): the estimated_* checks of a DriftPolicy will refuse them unless maxCalibrationError allows it"
    )
