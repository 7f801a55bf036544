"""A binary classifier's performance without labels, from its score histogram (pure, no I/O).

NannyML's confidence-based performance estimation (CBPE), done live from Prometheus buckets: if
the scores are calibrated, a row with score p is positive with probability p, so a window's
expected confusion matrix at the decision threshold t follows from how many rows fell in each
score bucket. With n_b rows in bucket b and p_b the bucket's representative score (the mean
score of the profile's rows in that bucket, its midpoint where the profile had none):

    TP = Σ_{b above t} n_b p_b        FP = Σ_{b above t} n_b (1 − p_b)
    FN = Σ_{b below t} n_b p_b        TN = Σ_{b below t} n_b (1 − p_b)

t is one of the profile's score edges, so every bucket lies wholly on one side. Accuracy,
precision, recall and F1 (of the positive class) follow as from a labelled confusion matrix.

The estimate is only as good as the calibration. The profile records, per bucket, the mean
score and how many rows were labelled positive, so the same estimator can be run on the
profile's own rows and compared with what their labels give (:meth:`ScoreCalibration.on_reference`);
a check refuses to estimate when the two differ by more than its tolerance — for the checked
metric, and on each side of the threshold: precision (positives among the rows predicted
positive) and the negative predictive value (negatives among the rows predicted negative).
The sides matter because a live window re-weights them: scores that overstate every row's
probability by the same amount promise nearly the right accuracy on a balanced reference (the
errors above and below the threshold cancel) and the wrong one once most rows sit on one side.
With both sides within the tolerance, an accuracy estimate stays within it however the mix
between the sides moves. Calibration survives covariate shift (p(y | score) unchanged while the
score mix moves) but not concept drift (p(y | x) itself changes): no label-free estimate can see that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelwarden.contract.profile import Profile

METRICS = ("accuracy", "precision", "recall", "f1")
NPV = "negative predictive value"  # TN / (TN + FN): the calibration of the rows predicted negative
SIDES = ("precision", NPV)  # checked on the reference whatever the metric (see the module doc)


class Uncalibrated(ValueError):
    """The profile cannot back an estimate (no scores, not binary, no calibration); the message says why."""


class EdgeMismatch(ValueError):
    """The live score histogram's buckets are not the profile's."""


@dataclass(frozen=True)
class Confusion:
    """A binary confusion matrix of (possibly fractional, expected) counts."""

    tp: float
    fp: float
    fn: float
    tn: float

    @property
    def total(self) -> float:
        return self.tp + self.fp + self.fn + self.tn

    def metric(self, name: str) -> float | None:
        """accuracy, precision/recall/F1 of the positive class, or the negative predictive value;
        None where undefined (0/0)."""
        if name == "accuracy":
            numerator, denominator = self.tp + self.tn, self.total
        elif name == "precision":
            numerator, denominator = self.tp, self.tp + self.fp
        elif name == "recall":
            numerator, denominator = self.tp, self.tp + self.fn
        elif name == "f1":
            numerator, denominator = 2 * self.tp, 2 * self.tp + self.fp + self.fn
        elif name == NPV:
            numerator, denominator = self.tn, self.tn + self.fn
        else:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        return float(numerator / denominator) if denominator > 0 else None


def expected_confusion(counts: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray,
                       above: Sequence[bool] | np.ndarray) -> Confusion:
    """The expected confusion matrix of rows binned by score: ``counts[b]`` rows whose probability
    of being positive is ``scores[b]``, predicted positive where ``above[b]``."""
    n = np.maximum(np.asarray(counts, dtype=float), 0.0)
    p = np.asarray(scores, dtype=float)
    side = np.asarray(above, dtype=bool)
    if not (n.shape == p.shape == side.shape):
        raise ValueError("counts, scores and above need one entry per bucket")
    positive, negative = n * p, n * (1.0 - p)
    return Confusion(
        tp=float(positive[side].sum()), fp=float(negative[side].sum()),
        fn=float(positive[~side].sum()), tn=float(negative[~side].sum()),
    )


def labelled_confusion(counts: Sequence[float] | np.ndarray, positives: Sequence[float] | np.ndarray,
                       above: Sequence[bool] | np.ndarray) -> Confusion:
    """The confusion matrix of labelled rows binned by score: ``positives[b]`` of ``counts[b]`` are positive."""
    n = np.asarray(counts, dtype=float)
    k = np.asarray(positives, dtype=float)
    side = np.asarray(above, dtype=bool)
    return Confusion(
        tp=float(k[side].sum()), fp=float((n - k)[side].sum()),
        fn=float(k[~side].sum()), tn=float((n - k)[~side].sum()),
    )


def bucket_midpoints(edges: Sequence[float]) -> np.ndarray:
    """Midpoints of the score buckets (edges, then +Inf), scores being probabilities in [0, 1]:
    the first bucket starts at 0, the +Inf bucket ends at 1."""
    finite = np.asarray(edges, dtype=float)
    lower = np.concatenate([[min(0.0, finite[0]) if finite.size else 0.0], finite])
    upper = np.concatenate([finite, [max(1.0, finite[-1]) if finite.size else 1.0]])
    return np.clip((lower + upper) / 2.0, 0.0, 1.0)


@dataclass(frozen=True)
class Gap:
    """One metric on the profile's rows: estimated from the scores and realised from the labels."""

    metric: str
    expected: float | None
    realised: float | None

    @property
    def difference(self) -> float | None:
        """|expected − realised|, None where the metric is undefined on those rows."""
        return None if self.expected is None or self.realised is None else abs(self.expected - self.realised)


@dataclass(frozen=True)
class ScoreCalibration:
    """What the estimate needs from a profile: the score buckets, each bucket's representative
    score and side of the threshold, and the profile's own rows for the calibration check."""

    threshold: float
    edges: np.ndarray  # the profile's finite score edges; +Inf follows
    representative: np.ndarray  # p_b per bucket: the profile's mean score, else the midpoint
    above: np.ndarray  # per bucket: predicted positive (the bucket lies above the threshold)
    reference_counts: np.ndarray  # the profile's rows per bucket
    reference_positives: np.ndarray  # of which labelled positive
    positive_class: str

    @classmethod
    def from_profile(cls, profile: Profile) -> "ScoreCalibration":
        """The calibration of a binary classifier's profile; Uncalibrated saying why there is none."""
        prediction = profile.prediction
        if prediction.task != "classification":
            raise Uncalibrated("the profile is of a regression model; estimated metrics need a binary classifier's scores")
        if prediction.score is None:
            raise Uncalibrated(
                "the profile has no scores (a classifier without predict_proba, or a profile built without --model); "
                "estimated metrics need a binary classifier's calibrated scores"
            )
        if prediction.positive_class is None:
            raise Uncalibrated(
                f"the profile is of a classifier with {len(prediction.levels or [])} classes; estimated metrics need a "
                "binary classifier"
            )
        calibration = prediction.calibration
        if calibration is None:
            raise Uncalibrated(
                "the profile has no calibration (written by an older modelwarden, or its target column did not hold "
                "the model's classes): build it again with `modelwarden profile --model … --data …` on labelled data"
            )
        edges = np.asarray(prediction.score.edges, dtype=float)
        midpoints = bucket_midpoints(edges)
        representative = np.array(
            [midpoint if mean is None else mean for mean, midpoint in zip(calibration.mean_scores, midpoints)], dtype=float
        )
        position = int(np.searchsorted(edges, calibration.threshold))  # the threshold is an edge (validated)
        above = np.arange(edges.size + 1) > position
        return cls(
            threshold=calibration.threshold,
            edges=edges,
            representative=representative,
            above=above,
            reference_counts=np.asarray(prediction.score.counts, dtype=float),
            reference_positives=np.asarray(calibration.positives, dtype=float),
            positive_class=prediction.positive_class,
        )

    @property
    def reference_rows(self) -> int:
        return int(self.reference_counts.sum())

    def on_reference(self, metric: str) -> tuple[float | None, float | None]:
        """(estimated from the scores, realised from the labels) for ``metric`` on the profile's rows."""
        expected = expected_confusion(self.reference_counts, self.representative, self.above).metric(metric)
        realised = labelled_confusion(self.reference_counts, self.reference_positives, self.above).metric(metric)
        return expected, realised

    def gaps(self, metric: str) -> list[Gap]:
        """What must be calibrated to estimate ``metric``: itself and both sides of the threshold."""
        return [Gap(name, *self.on_reference(name)) for name in dict.fromkeys((metric, *SIDES))]

    def refusals(self, metric: str, tolerance: float) -> list[Gap]:
        """The gaps that forbid estimating ``metric``: above ``tolerance``, or undefined on the profile's rows."""
        return [gap for gap in self.gaps(metric) if gap.difference is None or gap.difference > tolerance]

    def check_edges(self, le: np.ndarray) -> None:
        """EdgeMismatch unless ``le`` (a live histogram's upper bounds, +Inf last) are the profile's edges."""
        expected = np.concatenate([self.edges, [np.inf]])
        live = np.asarray(le, dtype=float)
        if live.shape != expected.shape or not np.array_equal(live, expected):
            raise EdgeMismatch(
                f"the live prediction_value buckets ({_edges(live)}) are not the profile's score edges "
                f"({_edges(expected)}): the server exports another profile's buckets"
            )

    def estimate(self, counts: np.ndarray) -> Confusion:
        """The expected confusion matrix of a window whose score histogram (the profile's buckets,
        per-bin counts, +Inf last) is ``counts``."""
        return expected_confusion(counts, self.representative, self.above)


def _edges(le: np.ndarray, shown: int = 6) -> str:
    text = ["+Inf" if np.isinf(x) else f"{x:g}" for x in le]
    if len(text) > shown:
        text = [*text[: shown // 2], "…", *text[-shown // 2:]]
    return f"{len(le)} buckets: " + ", ".join(text)
