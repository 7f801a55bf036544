"""Loading a scikit-learn model from where it lives, and running it the same way everywhere.

A model is a file or a directory as the storage initializer leaves it (docs/serving.md, "Model
formats"): ``model.joblib`` (pickle), ``model.skops`` (skops: no code runs on load, types on an
allow-list) or an MLflow scikit-learn model (an ``MLmodel`` file naming ``model.pkl`` or
``model.skops``). MLflow models are read from the ``MLmodel`` file alone, without importing mlflow:
the server image need not carry it. Every failure is one :class:`ModelLoadError` line.

The profile builder and the server both go through :class:`ModelRunner`, so "the positive-class
score" means the same thing in the reference profile and in the live ``prediction_value``
histogram.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import numpy as np

MODEL_FILE = "model.joblib"
SKOPS_FILE = "model.skops"
MLFLOW_FILE = "MLmodel"
PROFILE_FILE = "profile.json"
LAYOUTS = (MODEL_FILE, SKOPS_FILE, MLFLOW_FILE)  # what a model directory may hold, exactly one of
MLFLOW_FORMATS = ("pickle", "cloudpickle", "skops")  # flavors.sklearn.serialization_format
LISTED_ENTRIES = 8  # directory entries named in an "unknown layout" error

Format = Literal["joblib", "pickle", "skops"]


class ModelLoadError(RuntimeError):
    """The model cannot be found or loaded; the message is one line for a startup error."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class ModelArtifact:
    """Which file to load and how, worked out before anything in it is read."""

    path: Path  # the file to deserialize
    format: Format  # joblib.load, pickle.load (MLflow pickle/cloudpickle) or skops.io.load
    directory: Path  # where profile.json is looked for
    source: str  # how the model was found, for messages: "model.skops", "MLflow sklearn model (cloudpickle)"
    declared_skops_types: tuple[str, ...] = ()  # MLflow's skops_trusted_types: named in errors, never trusted


def model_location(uri: str) -> Path:
    """A local path or file:// URI (remote stores are the storage initializer's job)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme:
        return Path(uri)
    raise ModelLoadError(
        f"model URI {uri!r} uses the {parsed.scheme}:// scheme; this server only loads local paths or "
        "file:// URIs (download the model in an init container or mount it as a volume)"
    )


def locate_model(path: Path) -> ModelArtifact:
    """The artifact at ``path``: a .joblib/.skops (or other pickle) file, an MLmodel file, or a model directory."""
    if path.is_file():
        if path.name == MLFLOW_FILE:
            return read_mlmodel(path.parent)
        if path.suffix == ".skops":
            return ModelArtifact(path, "skops", path.parent, path.name)
        return ModelArtifact(path, "joblib", path.parent, path.name)
    if not path.is_dir():
        raise ModelLoadError(f"model not found: {path}")
    try:
        entries = sorted(entry.name for entry in os.scandir(path))
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model directory {path}: {exc.strerror or exc}") from exc
    expected = f"{MODEL_FILE}, {SKOPS_FILE} or an MLflow model ({MLFLOW_FILE} file)"
    if not entries:
        raise ModelLoadError(f"the model directory {path} is empty: expected {expected}")
    present = [name for name in LAYOUTS if name in entries]
    if not present:
        listed = ", ".join(entries[:LISTED_ENTRIES]) + (f" and {len(entries) - LISTED_ENTRIES} more" if len(entries) > LISTED_ENTRIES else "")
        raise ModelLoadError(f"no model in {path}: looked for {expected}; found {listed}")
    if MLFLOW_FILE in present:
        return read_mlmodel(path)  # an MLflow model's own model.skops is the one its MLmodel names
    if len(present) > 1:
        raise ModelLoadError(f"{path} holds both {' and '.join(present)}: keep only the one to serve")
    name = present[0]
    return ModelArtifact(path / name, "skops" if name == SKOPS_FILE else "joblib", path, name)


def read_mlmodel(directory: Path) -> ModelArtifact:
    """The sklearn flavor of an MLflow model directory, read from its MLmodel YAML (not via mlflow)."""
    import yaml

    mlmodel = directory / MLFLOW_FILE
    try:
        doc = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {mlmodel}: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelLoadError(_one_line(f"invalid MLflow {mlmodel}: {exc}")) from exc
    flavors = doc.get("flavors") if isinstance(doc, dict) else None
    if not isinstance(flavors, dict):
        raise ModelLoadError(f"invalid MLflow {mlmodel}: no flavors mapping")
    flavor = flavors.get("sklearn")
    if not isinstance(flavor, dict):
        raise ModelLoadError(
            f"{directory} is an MLflow model without the sklearn flavor (flavors: {', '.join(map(str, flavors)) or 'none'}); "
            "this server loads scikit-learn models only"
        )
    pickled = flavor.get("pickled_model")
    if not isinstance(pickled, str) or not pickled:
        raise ModelLoadError(f"invalid MLflow {mlmodel}: flavors.sklearn.pickled_model is missing")
    serialization = flavor.get("serialization_format") or "pickle"  # MLflow's own default when absent
    if serialization not in MLFLOW_FORMATS:
        raise ModelLoadError(
            f"MLflow {mlmodel} has serialization_format {serialization!r}; this server loads {', '.join(MLFLOW_FORMATS)}"
        )
    path = directory / pickled
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ModelLoadError(f"MLflow {mlmodel} names {pickled!r}, outside the model directory")
    if not path.is_file():
        raise ModelLoadError(f"MLflow {mlmodel} names {pickled!r}, which is not in {directory}")
    declared = flavor.get("skops_trusted_types") or []
    return ModelArtifact(
        path,
        "skops" if serialization == "skops" else "pickle",
        directory,
        f"MLflow sklearn model ({serialization})",
        tuple(str(t) for t in declared) if isinstance(declared, list) else (),
    )


def skops_types_to_trust(artifact: ModelArtifact, trusted: Iterable[str]) -> list[str]:
    """The types beyond skops' defaults that ``artifact`` needs, all of which the operator trusts;
    any other is a ModelLoadError naming them (the artifact cannot vouch for itself)."""
    import skops.io

    try:
        needed = skops.io.get_untrusted_types(file=artifact.path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model {artifact.path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - not a skops file (zip, schema): the same startup error
        raise ModelLoadError(_one_line(f"cannot load model {artifact.path}: not a skops file ({type(exc).__name__}: {exc})")) from exc
    allowed = set(trusted)
    refused = [name for name in needed if name not in allowed]
    if refused:
        declared = ""
        if artifact.declared_skops_types:
            declared = " (its MLmodel lists skops_trusted_types, but a model cannot vouch for itself)"
        raise ModelLoadError(
            f"refusing to load {artifact.path}: it needs types skops does not trust by default: {', '.join(refused)}"
            f"{declared}; if you trust them, pass --trust-skops-types {','.join(refused)} (env MODEL_SKOPS_TRUSTED)"
        )
    return needed


def load_estimator(artifact: ModelArtifact, trusted_skops_types: Iterable[str] = ()) -> Any:
    """Deserialize the artifact. joblib and pickle run code from the file; skops only builds allowed types."""
    types = skops_types_to_trust(artifact, trusted_skops_types) if artifact.format == "skops" else []
    try:
        if artifact.format == "skops":
            import skops.io

            estimator = skops.io.load(artifact.path, trusted=types)
        elif artifact.format == "pickle":
            # MLflow's pickle and cloudpickle formats: cloudpickle writes a plain pickle for an
            # importable estimator; pickle imports cloudpickle itself when the file needs it (lambdas).
            with artifact.path.open("rb") as handle:
                estimator = pickle.load(handle)  # noqa: S301 - the artifact is trusted (docs/security.md)
        else:
            import joblib

            estimator = joblib.load(artifact.path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model {artifact.path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any deserialization failure is the same startup error
        raise ModelLoadError(_one_line(f"cannot load model {artifact.path}: {type(exc).__name__}: {exc}")) from exc
    if not callable(getattr(estimator, "predict", None)):
        raise ModelLoadError(f"{artifact.path} holds a {type(estimator).__name__}, which has no predict() method")
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
        try:
            classifier = is_classifier(estimator)
        except AttributeError:  # not a BaseEstimator (sklearn >= 1.6 asks for __sklearn_tags__): go by classes_
            classifier = False
        self.task = "classification" if classifier or hasattr(estimator, "classes_") else "regression"
        if self.task == "classification":
            self.classes = list(np.asarray(getattr(estimator, "classes_", [])).tolist()) or None
        self.has_scores = self.task == "classification" and callable(getattr(estimator, "predict_proba", None))
        self.n_features: int | None = getattr(estimator, "n_features_in_", None)

    def feature_names(self) -> list[str] | None:
        """Input names when there is no profile to name them: the ones the model was fitted with,
        else sklearn's ``x0, x1, …``; None when the model does not say how many inputs it takes."""
        names = getattr(self.estimator, "feature_names_in_", None)
        if names is not None:
            return [str(name) for name in names]
        return None if self.n_features is None else [f"x{i}" for i in range(self.n_features)]

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


def load_model(uri: str, trusted_skops_types: Iterable[str] = ()) -> tuple[ModelRunner, ModelArtifact]:
    """The runner and where it came from (the server looks for profile.json in ``artifact.directory``)."""
    artifact = locate_model(model_location(uri))
    return ModelRunner(load_estimator(artifact, trusted_skops_types)), artifact


def load_runner(uri: str, trusted_skops_types: Iterable[str] = ()) -> tuple[ModelRunner, Path]:
    runner, artifact = load_model(uri, trusted_skops_types)
    return runner, artifact.path
