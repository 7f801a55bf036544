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


class PredictionProfile(Distribution):
    """The model's output on the training data (or the target column when no model was given).

    Classification: ``kind`` is categorical over the classes, and ``score`` is the histogram
    behind ``modelwarden_prediction_value`` (probability of ``positiveClass`` for a binary
    classifier, probability of the predicted class otherwise; absent without predict_proba).
    Regression: ``kind`` is numeric and the distribution itself is the prediction_value one.
    """

    task: Task
    source: Literal["model", "target"]
    score: Distribution | None = None
    score_meaning: str | None = None
    positive_class: str | None = None

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
