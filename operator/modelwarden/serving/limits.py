"""Which feature and feedback values a server accepts: finite, squarable, plausible for the profile.

One absurd value poisons a replica's counters for the rest of its life: (1e200)² is +Inf, so
``squared_error_sum`` stays +Inf and mse/rmse are InsufficientData until a restart; 1e308 features
make a histogram's ``_sum`` +Inf; and even a finite 1e100 in a running sum swallows every later
ordinary value (float64 keeps 16 digits). So the request parser (serving.payload) refuses such
values before they reach the monitor:

* always, when a value is non-finite or larger in magnitude than :data:`MAX_MAGNITUDE` (so large
  that its error's fourth power, summed, would overflow);
* when it lies further outside the profile's reference span than ``factor`` times the span's
  scale (:func:`plausible_range`). The default factor (1000) is large on purpose: a real shift,
  even a unit change such as grams for kilograms, must still reach the histograms and show as
  drift, not vanish as rejected requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from modelwarden.contract.profile import Distribution, Profile

# An error between two accepted values has a fourth power (the MSE bound's spread) of at most
# (2e70)⁴ = 1.6e281, so even a running sum of them stays finite for 1e27 observations; a bound near
# the fourth root of 1.8e308 ≈ 1e77 would let a few thousand requests overflow it again.
MAX_MAGNITUDE = 1e70
DEFAULT_RANGE_FACTOR = 1000.0


@dataclass(frozen=True)
class Range:
    """Closed interval of accepted values."""

    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high  # NaN: False

    def describe(self) -> str:
        return f"[{self.low:.6g}, {self.high:.6g}]"


ANY_SQUARABLE = Range(-MAX_MAGNITUDE, MAX_MAGNITUDE)


def plausible_range(distribution: Distribution, factor: float) -> Range:
    """The reference span (the profile's bucket edges and mean) widened on each side by ``factor``
    times its scale (the larger of its width, its largest magnitude and its std; 1 if all are 0).

    The profile keeps quantile edges, not the minimum and maximum, so the span is the inner
    quantiles' (0.5 %–99.5 % with 2000 rows or more, else 5 %–95 % with 20 bins); the factor dwarfs the difference. ``factor <= 0`` or a
    categorical column (coded by level, any number is an unseen level): only the magnitude bound.
    """
    points = [*distribution.edges, *([distribution.mean] if distribution.mean is not None else [])]
    if factor <= 0 or distribution.kind == "categorical" or not points:
        return ANY_SQUARABLE
    low, high = min(points), max(points)
    scale = max(high - low, abs(low), abs(high), distribution.std or 0.0) or 1.0
    return Range(max(low - factor * scale, -MAX_MAGNITUDE), min(high + factor * scale, MAX_MAGNITUDE))


@dataclass(frozen=True)
class ValueLimits:
    """Accepted values per feature (in profile order) and for regression feedback."""

    features: tuple[Range, ...]
    feedback: Range  # predicted and actual values of regression feedback
    factor: float = 0.0  # what widened the profile's ranges (0: none, only the magnitude bound)

    @classmethod
    def from_profile(cls, profile: Profile, factor: float = DEFAULT_RANGE_FACTOR) -> "ValueLimits":
        feedback = plausible_range(profile.prediction, factor) if profile.prediction.task == "regression" else ANY_SQUARABLE
        return cls(tuple(plausible_range(f, factor) for f in profile.features), feedback, max(factor, 0.0))

    @classmethod
    def squarable(cls, width: int) -> "ValueLimits":
        """No profile range: only the magnitude bound."""
        return cls((ANY_SQUARABLE,) * width, ANY_SQUARABLE)

    @cached_property
    def _low(self) -> np.ndarray:
        return np.array([r.low for r in self.features])

    @cached_property
    def _high(self) -> np.ndarray:
        return np.array([r.high for r in self.features])

    def first_outside(self, matrix: np.ndarray, columns: list[int] | None = None) -> tuple[int, int] | None:
        """(row, position in ``columns``) of the first value outside its feature's range, or None.

        ``matrix`` holds finite floats, one column per entry of ``columns`` (default: every feature)."""
        low, high = (self._low, self._high) if columns is None else (self._low[columns], self._high[columns])
        inside = (matrix >= low) & (matrix <= high)
        if inside.all():
            return None
        row, column = np.argwhere(~inside)[0]
        return int(row), int(column)

    def explain(self, accepted: Range) -> str:
        """Why a range is what it is, for the 4xx message."""
        if accepted == ANY_SQUARABLE:
            return f"values beyond ±{MAX_MAGNITUDE:g} would overflow the exported sums"
        return f"the profile's range widened by --value-range-factor {self.factor:g}"
