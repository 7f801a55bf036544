"""`modelwarden profile`: build a reference profile from a training CSV (and optionally the model).

Every column except the target is a feature, in file order (the order the model was trained
on). Columns are numeric unless listed in ``--categorical``; empty or non-finite cells are an
error rather than silently dropped, because the model would never have been trained on them.
The profile is built by :func:`modelwarden.serving.profile.build_profile_from_csv`.

It also reports on stderr (stdout may carry the profile) how many Prometheus series one
`modelwarden serve` process will export for the profile: features × buckets is what grows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelwarden.serving.model import ModelLoadError
from modelwarden.contract.profile import DEFAULT_Z_SCORE, Profile
from modelwarden.serving.profile import build_profile_from_csv, DEFAULT_BINS, DEFAULT_MAX_SERIES, ProfileError, series_count


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="training data as CSV with a header row")
    parser.add_argument("--target", required=True, help="the label column (excluded from the features)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile buckets per numeric column")
    parser.add_argument("--categorical", default="", help="comma-separated categorical columns")
    parser.add_argument("--model", help="joblib model: profile its predictions (else the target column)")
    parser.add_argument("--task", choices=("classification", "regression"), help="override the inferred task")
    parser.add_argument(
        "--z-score", type=float, default=DEFAULT_Z_SCORE, help="outlier threshold stored in the profile"
    )
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")


def run(args: argparse.Namespace) -> int:
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
        )
    except (ProfileError, ModelLoadError, OSError, ValueError) as exc:
        print(f"modelwarden profile: error: {exc}", file=sys.stderr)
        return 1
    if args.output is None:
        print(profile.to_json())
    else:
        args.output.write_text(profile.to_json() + "\n")
    print(_series_line(profile), file=sys.stderr)
    return 0


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
