"""Model quality and serving health from counters: confusion counts, error sums, histograms."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ConfusionMatrix:
    """Feedback counts: ``counts[i, j]`` = predicted ``classes[i]``, actually ``classes[j]``."""

    classes: tuple[str, ...]
    counts: np.ndarray

    @classmethod
    def from_pairs(cls, pairs: Mapping[tuple[str, str], float]) -> "ConfusionMatrix":
        """From {(predicted, actual): count}; negative or non-finite counts read as 0."""
        classes = tuple(sorted({label for pair in pairs for label in pair}))
        index = {label: i for i, label in enumerate(classes)}
        counts = np.zeros((len(classes), len(classes)))
        for (predicted, actual), count in pairs.items():
            counts[index[predicted], index[actual]] += count if math.isfinite(count) and count > 0 else 0.0
        return cls(classes, counts)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def accuracy(self) -> float | None:
        return float(np.trace(self.counts) / self.total) if self.total > 0 else None

    def per_class(self) -> dict[str, tuple[float, float, float]]:
        """Precision, recall and F1 per class; an undefined ratio counts as 0 (as scikit-learn)."""
        true_positive = np.diag(self.counts)
        predicted = self.counts.sum(axis=1)
        actual = self.counts.sum(axis=0)
        precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
        recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
        denominator = precision + recall
        f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
        return {label: (float(precision[i]), float(recall[i]), float(f1[i])) for i, label in enumerate(self.classes)}

    def score(self, metric: str, class_label: str | None) -> float | None:
        """precision/recall/f1 of one class (0 when never seen, as scikit-learn), or with
        ``class_label`` None their macro average over every class seen."""
        position = ("precision", "recall", "f1").index(metric)
        per_class = self.per_class()
        if self.total <= 0 or not per_class:
            return None
        if class_label is not None:
            return per_class[class_label][position] if class_label in per_class else 0.0
        return float(np.mean([scores[position] for scores in per_class.values()]))


def class_proportion(matrix: ConfusionMatrix, metric: str, class_label: str) -> tuple[float, float]:
    """(successes, trials) behind one class's metric: precision TP/predicted, recall TP/actual,
    and for F1 the Jaccard index TP/(TP + FP + FN), from which F1 = 2J/(1 + J)."""
    if class_label not in matrix.classes:
        return 0.0, 0.0
    i = matrix.classes.index(class_label)
    true_positive = float(matrix.counts[i, i])
    predicted, actual = float(matrix.counts[i].sum()), float(matrix.counts[:, i].sum())
    trials = {"precision": predicted, "recall": actual, "f1": predicted + actual - true_positive}[metric]
    return true_positive, trials


# Binary labels whose positive class needs no naming: scikit-learn's pos_label=1 (and true).
IMPLIED_POSITIVES = (({"0", "1"}, "1"), ({"false", "true"}, "true"))


@dataclass(frozen=True)
class Averaging:
    """How precision/recall/F1 without ``class`` are taken: of ``positive`` (binary, as
    scikit-learn's ``average='binary'``), or the macro average (``positive`` None, multiclass)."""

    positive: str | None
    why: str


def implied_positive(labels: Iterable[str]) -> str | None:
    """The positive class of 0/1 (or false/true) labels, spelled as they are; None otherwise."""
    spelled = {label.lower(): label for label in labels}
    for binary, positive in IMPLIED_POSITIVES:
        if spelled.keys() <= binary:
            return spelled.get(positive, positive)
    return None


def averaging(seen: Iterable[str], profile_classes: list[str] | None, profile_positive: str | None) -> Averaging:
    """Binary models are judged on their positive class, multiclass ones on the macro average.

    The profile's classes decide when there is a profile (its positiveClass, else 1/true);
    without one the labels seen do: only 0/1 (or false/true) is binary, more than two labels is
    multiclass. Raises ValueError when two labels leave the positive class unnamed.
    """
    classes = list(profile_classes) if profile_classes is not None else sorted(set(seen))
    source = "the profile's" if profile_classes is not None else "the"
    if len(classes) > 2:
        return Averaging(None, f"macro average over {source} {len(classes)} classes" + ("" if profile_classes is not None else " seen"))
    positive = (profile_positive if profile_classes is not None else None) or implied_positive(classes)
    if positive is None:
        raise ValueError(f"{source} labels {classes} may be a binary model's: set class (or spec.reference.profileRef) "
                         "to name the positive class")
    return Averaging(positive, "the positive class")


CONSISTENCY_TOLERANCE = 1e-9  # float rounding of sums that are consistent


@dataclass(frozen=True)
class RegressionErrors:
    """Regression feedback: sums of squared and absolute errors (and of fourth powers, the spread of
    the squared errors; None from a server older than that series) over ``observations``."""

    squared_error_sum: float
    absolute_error_sum: float
    observations: float
    fourth_power_error_sum: float | None = None

    def metric(self, name: str) -> float | None:
        if not self.observations > 0:
            return None
        mse = max(self.squared_error_sum, 0.0) / self.observations
        return {"mse": mse, "rmse": math.sqrt(mse), "mae": max(self.absolute_error_sum, 0.0) / self.observations}[name]

    def bounds(self, name: str, level: float) -> tuple[float, float] | None:
        """One-sided Student-t bounds on the metric, each holding with probability about 1 − level.

        MSE is the mean of the squared errors, bounded by their spread (Σe⁴); RMSE through MSE's
        bounds (the square root is monotone); MAE is the mean of the absolute errors, whose spread
        Σe² already gives. None without the sums it needs, with fewer than 2 observations, or with
        sums no set of errors could have (n·Σy² < (Σy)²: the two sums cover different series, as in
        a fleet half upgraded to the fourth-power series): a bound of zero width would act on the
        point estimate after all.
        """
        n = self.observations
        if not n >= 2:
            return None
        if name == "mae":
            values_sum, squares_sum = self.absolute_error_sum, self.squared_error_sum
        else:
            values_sum, squares_sum = self.squared_error_sum, self.fourth_power_error_sum
        if squares_sum is None or not (math.isfinite(values_sum) and math.isfinite(squares_sum)):
            return None
        mean = max(values_sum, 0.0) / n
        if squares_sum < n * mean * mean * (1 - CONSISTENCY_TOLERANCE):
            return None
        variance = max(squares_sum - n * mean * mean, 0.0) / (n - 1)
        margin = float(stats.t.ppf(1 - level, n - 1)) * math.sqrt(variance / n)
        lower, upper = max(mean - margin, 0.0), mean + margin
        return (math.sqrt(lower), math.sqrt(upper)) if name == "rmse" else (lower, upper)


def histogram_quantile(quantile: float, le: np.ndarray, counts: np.ndarray) -> float | None:
    """The q-quantile of a histogram by linear interpolation inside the bucket, as PromQL's
    histogram_quantile: the first bucket starts at 0 (if its bound is positive); a rank in the
    +Inf bucket returns the highest finite bound. ``counts`` are per-bin (not cumulative).
    """
    total = float(counts.sum())
    if total <= 0:
        return None
    cumulative = np.cumsum(counts)
    rank = quantile * total
    bucket = int(np.searchsorted(cumulative, rank, side="left"))
    bucket = min(bucket, len(le) - 1)
    upper = float(le[bucket])
    if math.isinf(upper):
        finite = le[np.isfinite(le)]
        return float(finite[-1]) if finite.size else None
    if bucket == 0:
        lower, below = (0.0 if upper > 0 else upper), 0.0
    else:
        lower, below = float(le[bucket - 1]), float(cumulative[bucket - 1])
    in_bucket = float(counts[bucket])
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def rate(events: float, total: float) -> float | None:
    """events / total, or None without any observation."""
    return min(max(events, 0.0) / total, 1.0) if total > 0 else None


@dataclass(frozen=True)
class ProportionTest:
    """One-sided two-proportion z-test: is the candidate's proportion worse than the baseline's?"""

    candidate: float
    baseline: float
    z: float
    p_value: float


def two_proportion_test(
    candidate_successes: float,
    candidate_total: float,
    baseline_successes: float,
    baseline_total: float,
    higher_is_worse: bool,
) -> ProportionTest:
    """Pooled z-test of H0 "candidate is no worse" against H1 "candidate is worse".

    ``higher_is_worse`` is True for an error rate, False for accuracy. With no variance at all
    (both 0% or both 100%) the candidate is not worse: z = 0, p = 0.5.
    """
    p_candidate = candidate_successes / candidate_total
    p_baseline = baseline_successes / baseline_total
    pooled = (candidate_successes + baseline_successes) / (candidate_total + baseline_total)
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / candidate_total + 1 / baseline_total))
    worse_by = (p_candidate - p_baseline) if higher_is_worse else (p_baseline - p_candidate)
    z = worse_by / standard_error if standard_error > 0 else 0.0
    return ProportionTest(p_candidate, p_baseline, z, float(stats.norm.sf(z)))
