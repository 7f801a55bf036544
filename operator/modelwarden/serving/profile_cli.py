"""`modelwarden profile`: build a reference profile from a training CSV (and optionally the model).

Every column except the target is a feature, in file order (the order the model was trained
on). Columns are numeric unless listed in ``--categorical``; empty or non-finite cells are an
error rather than silently dropped, because the model would never have been trained on them.

It also reports on stderr (stdout may carry the profile) how many Prometheus series one
`modelwarden serve` process will export for the profile: features × buckets is what grows.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from modelwarden.serving.model import ModelLoadError, ModelRunner, load_runner
from modelwarden.serving.profile import (
    DEFAULT_BINS,
    DEFAULT_MAX_SERIES,
    DEFAULT_Z_SCORE,
    Profile,
    ProfileError,
    Task,
    distribution,
    prediction_profile,
    series_count,
)

REGRESSION_MIN_DISTINCT = 20  # a numeric target with more distinct values than this is a regression target


def read_csv(path: Path) -> dict[str, list[str]]:
    """Columns of raw cells, keyed by header name, in file order."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ProfileError(f"{path}: empty file (a header row is required)")
        if len(set(header)) != len(header):
            raise ProfileError(f"{path}: duplicate column names in the header")
        columns: dict[str, list[str]] = {name: [] for name in header}
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ProfileError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
            for name, cell in zip(header, row):
                columns[name].append(cell)
    if not columns[header[0]]:
        raise ProfileError(f"{path}: no data rows")
    return columns


def parse_column(name: str, cells: list[str], categorical: bool) -> np.ndarray:
    """Numbers as float64; categorical cells as floats when all parse as numbers, else strings."""
    numbers = np.empty(len(cells))
    for row, cell in enumerate(cells):
        try:
            numbers[row] = float(cell)
        except ValueError:
            if categorical:
                return np.array([_non_empty(name, row, c) for row, c in enumerate(cells)], dtype=object)
            raise ProfileError(
                f"column {name!r}, row {row + 1}: {cell!r} is not a number (list it in --categorical?)"
            ) from None
        if not math.isfinite(numbers[row]):
            raise ProfileError(f"column {name!r}, row {row + 1}: {cell!r} is not finite")
    return numbers


def _non_empty(name: str, row: int, cell: str) -> str:
    if not cell:
        raise ProfileError(f"column {name!r}, row {row + 1}: empty cell")
    return cell


def model_input(columns: list[np.ndarray]) -> np.ndarray:
    """The training matrix as the model saw it: float64, or object when text categories exist."""
    if all(column.dtype.kind == "f" for column in columns):
        return np.column_stack(columns)
    matrix = np.empty((len(columns[0]), len(columns)), dtype=object)
    for i, column in enumerate(columns):
        matrix[:, i] = column
    return matrix


def infer_task(target: np.ndarray) -> Task:
    if target.dtype.kind != "f":
        return "classification"
    integral = bool(np.all(target == np.round(target)))
    return "classification" if integral and np.unique(target).size <= REGRESSION_MIN_DISTINCT else "regression"


def build_profile_from_csv(
    data: Path,
    target: str,
    *,
    bins: int = DEFAULT_BINS,
    categorical: frozenset[str] = frozenset(),
    model: str | None = None,
    task: Task | None = None,
    z_score: float = DEFAULT_Z_SCORE,
) -> Profile:
    raw = read_csv(data)
    if target not in raw:
        raise ProfileError(f"target column {target!r} is not in {list(raw)}")
    unknown = sorted(categorical - set(raw))
    if unknown:
        raise ProfileError(f"--categorical names unknown column(s) {unknown}")
    names = [name for name in raw if name != target]
    if not names:
        raise ProfileError("the CSV has no feature columns besides the target")
    columns = [parse_column(name, raw[name], name in categorical) for name in names]
    features = [
        distribution(name, column, "categorical" if name in categorical else "numeric", bins)
        for name, column in zip(names, columns)
    ]
    target_values = parse_column(target, raw[target], categorical=True)
    if model is None:
        chosen: Task = task or infer_task(target_values)
        prediction = prediction_profile(chosen, "target", target_values, bins)
    else:
        runner, _ = load_runner(model)
        prediction = _model_prediction(runner, model_input(columns), bins, task)
    return Profile(
        target=target, rows=len(raw[target]), bins=bins, z_score=z_score, features=features, prediction=prediction
    )


def _model_prediction(runner: ModelRunner, x: np.ndarray, bins: int, task: Task | None) -> Any:
    if task is not None and task != runner.task:
        raise ProfileError(f"--task {task} contradicts the model, which is a {runner.task} model")
    try:
        outputs = runner.predict(x)
    except Exception as exc:  # noqa: BLE001 - surfaced as a one-line profile error
        raise ProfileError(f"the model cannot predict on the training data: {type(exc).__name__}: {exc}") from exc
    return prediction_profile(
        runner.task,  # type: ignore[arg-type]
        "model",
        outputs.predicted,
        bins,
        classes=runner.classes,
        scores=outputs.scores,
        score_meaning=runner.score_meaning,
        positive_class=runner.positive_class,
    )


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
    print(series_line(profile), file=sys.stderr)
    return 0


def series_line(profile: Profile) -> str:
    """One line: the series count, and a warning when `modelwarden serve` would refuse it by default."""
    series = series_count(profile)
    line = f"series per server process: {series}"
    if series.total > DEFAULT_MAX_SERIES:
        line += (
            f"; more than the default --max-series {DEFAULT_MAX_SERIES} of `modelwarden serve`: "
            "use fewer --bins (or train on fewer features), or raise --max-series"
        )
    return line
