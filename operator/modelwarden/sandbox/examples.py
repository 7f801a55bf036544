"""Train the example models (a classifier and a regressor) on generated data.

Each lands in its own directory as ``model.joblib`` + ``profile.json`` + ``train.csv`` — the
layout ``modelwarden serve --model DIR`` expects. Used by examples/models/train.py, the sandbox
and the tests (training both takes well under a second).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from modelwarden.sandbox import datagen
from modelwarden.serving.model import MODEL_FILE, PROFILE_FILE
from modelwarden.serving.profile import build_profile_from_csv

Kind = Literal["classifier", "regressor"]
TRAIN_FILE = "train.csv"


@dataclass(frozen=True)
class ExampleModel:
    directory: Path

    @property
    def model(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def profile(self) -> Path:
        return self.directory / PROFILE_FILE

    @property
    def data(self) -> Path:
        return self.directory / TRAIN_FILE


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*datagen.FEATURE_NAMES, datagen.TARGET])
        for row, label in zip(x.tolist(), y.tolist()):
            writer.writerow([*(repr(v) for v in row), label])


def train_example(kind: Kind, directory: Path, rows: int = 5000, seed: int = 7, bins: int = 20) -> ExampleModel:
    """Scaler + LogisticRegression (classifier) or scaler + Ridge (regressor), with its profile."""
    import joblib
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    directory.mkdir(parents=True, exist_ok=True)
    example = ExampleModel(directory)
    if kind == "classifier":
        x, y = datagen.classification(rows, seed)
        estimator = make_pipeline(StandardScaler(), LogisticRegression())
    else:
        x, y = datagen.regression(rows, seed)
        estimator = make_pipeline(StandardScaler(), Ridge())
    estimator.fit(x, y)
    joblib.dump(estimator, example.model)
    write_csv(example.data, x, y)
    profile = build_profile_from_csv(example.data, datagen.TARGET, bins=bins, model=str(example.model))
    example.profile.write_text(profile.to_json() + "\n")
    return example


def train_examples(directory: Path, **kwargs: int) -> dict[Kind, ExampleModel]:
    return {kind: train_example(kind, directory / kind, **kwargs) for kind in ("classifier", "regressor")}
