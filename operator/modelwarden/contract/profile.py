"""The reference profile schema: profile.json, as written at training time and read by both sides.

`modelwarden profile` (serving.profile) computes a profile from training data; the model server
takes its bucket edges for the histograms it exports (so every replica and every version of a
model shares them), and the drift analysis (analysis.reference) takes its counts as the reference
distribution the live histograms are compared with. The two readers must parse the same document
the same way, so the schema and its validation live here, apart from the code that computes it.
The format is documented in docs/profile.md.

Conventions shared with the metrics contract:

* ``edges`` are finite, strictly increasing *upper bounds*; each becomes a Prometheus ``le``
  value and one more bucket (``le="+Inf"``) follows the last edge, so ``counts`` has
  ``len(edges) + 1`` entries. ``counts[i]`` holds the values ``edges[i-1] < x <= edges[i]``
  (not cumulative), exactly what ``np.searchsorted(edges, x, side="left")`` assigns.
* A categorical column is coded by the index of its level in ``levels`` (sorted, spelled by
  ``contract.metrics.level_key``), so its edges are ``0.0, 1.0, …, k-1`` and the ``+Inf`` bucket
  counts levels never seen in training.
* A binary classifier's score histogram has its decision threshold among its edges, so each
  bucket lies wholly on one side of it; with labels, ``prediction.calibration`` records how well
  the scores predicted them (what the label-free estimated_* checks rely on).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

FORMAT_VERSION = 1
DEFAULT_Z_SCORE = 3.0

Kind = Literal["numeric", "categorical"]
Task = Literal["classification", "regression"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Distribution(_Model):
    """One column's reference histogram plus the moments needed for z-scores."""

    name: str
    kind: Kind
    edges: list[float] = Field(description="finite, increasing bucket upper bounds (Prometheus le); +Inf follows")
    counts: list[int] = Field(description="observations per bucket, len(edges)+1, last is the +Inf bucket")
    count: int
    mean: float | None = None
    std: float | None = Field(default=None, description="population standard deviation (ddof=0)")
    levels: list[str] | None = Field(default=None, description="categorical only: level i is coded as i")

    @model_validator(mode="after")
    def _consistent(self) -> "Distribution":
        if any(not math.isfinite(edge) for edge in self.edges):
            raise ValueError(f"{self.name}: edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"{self.name}: edges must be strictly increasing")
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"{self.name}: counts needs len(edges)+1 entries (the last is the +Inf bucket)")
        if sum(self.counts) != self.count:
            raise ValueError(f"{self.name}: counts sum to {sum(self.counts)}, not count={self.count}")
        if self.kind == "categorical":
            if self.levels is None or self.edges != [float(i) for i in range(len(self.levels))]:
                raise ValueError(f"{self.name}: a categorical column needs levels and edges 0..k-1")
        return self


class Calibration(_Model):
    """How well a binary classifier's scores matched the labels on the profiled rows.

    Per score bucket (the buckets of ``prediction.score``, ``+Inf`` last): the mean score of the
    rows in it and how many of them were labelled ``positiveClass``. A row is predicted positive
    when its score is above ``threshold`` (one of the score edges, so a bucket is wholly on one
    side). ``expectedAccuracy`` is the accuracy the scores promise (the mean over rows of s where
    the score s is above the threshold, of 1 − s elsewhere); ``realisedAccuracy`` is the accuracy
    the labels give. A calibrated model has them close.
    """

    threshold: float = Field(description="decision threshold: scores above it are predicted positiveClass")
    mean_scores: list[float | None] = Field(description="mean score per score bucket; null where no row fell")
    positives: list[int] = Field(description="rows labelled positiveClass per score bucket")
    expected_accuracy: float = Field(description="accuracy promised by the scores alone")
    realised_accuracy: float = Field(description="accuracy against the labels")
    rows: int = Field(description="labelled rows behind these numbers")

    @model_validator(mode="after")
    def _consistent(self) -> "Calibration":
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("calibration: threshold must be between 0 and 1")
        if len(self.positives) != len(self.mean_scores):
            raise ValueError("calibration: meanScores and positives need one entry per score bucket")
        if any(p < 0 for p in self.positives) or sum(self.positives) > self.rows:
            raise ValueError("calibration: positives must be counts of the labelled rows")
        if any(m is not None and not 0.0 <= m <= 1.0 for m in self.mean_scores):
            raise ValueError("calibration: mean scores are probabilities, between 0 and 1")
        if not (0.0 <= self.expected_accuracy <= 1.0 and 0.0 <= self.realised_accuracy <= 1.0):
            raise ValueError("calibration: accuracies must be between 0 and 1")
        return self


class PredictionProfile(Distribution):
    """The model's output on the training data (or the target column when no model was given).

    Classification: ``kind`` is categorical over the classes, and ``score`` is the histogram
    behind ``modelwarden_prediction_value`` (probability of ``positiveClass`` for a binary
    classifier, probability of the predicted class otherwise; absent without predict_proba).
    Regression: ``kind`` is numeric and the distribution itself is the prediction_value one.
    ``calibration`` (binary classifiers profiled with the model and labels) backs the
    label-free performance estimate.
    """

    task: Task
    source: Literal["model", "target"]
    score: Distribution | None = None
    score_meaning: str | None = None
    positive_class: str | None = None
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _calibration(self) -> "PredictionProfile":
        calibration = self.calibration
        if calibration is None:
            return self
        if self.task != "classification" or self.score is None or self.positive_class is None:
            raise ValueError("calibration: only a binary classifier's scores (score and positiveClass) have one")
        if calibration.threshold not in self.score.edges:
            raise ValueError("calibration: threshold must be one of the score edges")
        if len(calibration.mean_scores) != len(self.score.counts) or calibration.rows != self.score.count:
            raise ValueError("calibration: needs one entry per score bucket and the score's row count")
        if any(p > n for p, n in zip(calibration.positives, self.score.counts)):
            raise ValueError("calibration: a bucket cannot hold more positives than rows")
        if any((m is None) != (n == 0) for m, n in zip(calibration.mean_scores, self.score.counts)):
            raise ValueError("calibration: a mean score is null exactly where its bucket is empty")
        return self

    def value_distribution(self) -> Distribution | None:
        """The distribution exported as ``modelwarden_prediction_value``."""
        return self.score if self.task == "classification" else self


class Profile(_Model):
    """A versioned reference profile (``formatVersion`` 1)."""

    format_version: Literal[1] = FORMAT_VERSION
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    target: str
    rows: int
    bins: int
    z_score: float = DEFAULT_Z_SCORE
    features: list[Distribution]
    prediction: PredictionProfile

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def classes(self) -> list[str]:
        return list(self.prediction.levels or []) if self.prediction.task == "classification" else []

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Profile":
        return cls.model_validate_json(text)
