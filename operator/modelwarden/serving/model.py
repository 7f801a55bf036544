"""Loading a joblib-dumped scikit-learn estimator and running it the same way everywhere.

The profile builder and the server both go through :class:`ModelRunner`, so "the positive-class
score" means the same thing in the reference profile and in the live ``prediction_value``
histogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

MODEL_FILE = "model.joblib"
PROFILE_FILE = "profile.json"


class ModelLoadError(RuntimeError):
    """The model cannot be found or loaded; the message is one line for a startup error."""


def resolve_model_path(uri: str) -> Path:
    """A local path or file:// URI, either the joblib file or a directory holding model.joblib."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif not parsed.scheme:
        path = Path(uri)
    else:
        raise ModelLoadError(
            f"model URI {uri!r} uses the {parsed.scheme}:// scheme; this server only loads local paths or "
            "file:// URIs (download the model in an init container or mount it as a volume)"
        )
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    return path


def load_estimator(path: Path) -> Any:
    import joblib

    try:
        estimator = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same startup error
        raise ModelLoadError(f"cannot load model {path}: {type(exc).__name__}: {exc}".replace("\n", " ")) from exc
    if not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(f"{path} holds a {type(estimator).__name__}, which has no predict() method")
    return estimator


@dataclass(frozen=True)
class Outputs:
    """One batch of model output: labels or values, plus the score the metrics histogram."""

    predicted: np.ndarray
    scores: np.ndarray | None


class ModelRunner:
    """A loaded estimator with its task, classes and score definition worked out once."""

    def __init__(self, estimator: Any):
        from sklearn.base import is_classifier

        self.estimator = estimator
        self.classes: list[Any] | None = None
        self.task = "classification" if is_classifier(estimator) or hasattr(estimator, "classes_") else "regression"
        if self.task == "classification":
            self.classes = list(np.asarray(getattr(estimator, "classes_", [])).tolist()) or None
        self.has_scores = self.task == "classification" and callable(getattr(estimator, "predict_proba", None))
        self.n_features: int | None = getattr(estimator, "n_features_in_", None)

    @property
    def binary(self) -> bool:
        return self.classes is not None and len(self.classes) == 2

    @property
    def positive_class(self) -> Any:
        return self.classes[1] if self.binary and self.classes else None

    @property
    def score_meaning(self) -> str | None:
        if not self.has_scores:
            return None
        if self.binary:
            return f"probability of class {self.positive_class!r}"
        return "probability of the predicted class"

    def predict(self, rows: np.ndarray) -> Outputs:
        """Predict a batch; validation is done by the caller, so sklearn may assume finite input."""
        from sklearn import config_context

        with config_context(assume_finite=True):
            if not self.has_scores:
                return Outputs(np.asarray(self.estimator.predict(rows)), None)
            proba = np.asarray(self.estimator.predict_proba(rows))
        best = proba.argmax(axis=1)
        predicted = np.asarray(self.estimator.classes_)[best]
        scores = proba[:, 1] if self.binary else proba[np.arange(len(best)), best]
        return Outputs(predicted, scores)


def load_runner(uri: str) -> tuple[ModelRunner, Path]:
    path = resolve_model_path(uri)
    return ModelRunner(load_estimator(path)), path
