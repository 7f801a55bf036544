"""Seeded synthetic data for the example models: clean, or drifted on purpose.

Drift is the two kinds the operator must tell apart:

* *data drift* — chosen features' means shift by ``k`` standard deviations (the labels still
  follow the same true function of the shifted features);
* *quality loss* — a fraction of labels is replaced by noise (classification: flipped;
  regression: extra Gaussian noise of ``label_noise`` target standard deviations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# (name, mean, std, weight in the true function)
FEATURES: tuple[tuple[str, float, float, float], ...] = (
    ("amount", 120.0, 45.0, 1.6),
    ("account_age_days", 900.0, 300.0, -1.1),
    ("transactions_per_day", 6.0, 2.0, 0.9),
    ("distance_km", 15.0, 6.0, 0.7),
    ("balance", 2500.0, 800.0, -0.5),
    ("merchant_risk", 0.0, 1.0, 1.3),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, *_ in FEATURES)
TARGET = "label"
_MEANS = np.array([f[1] for f in FEATURES])
_STDS = np.array([f[2] for f in FEATURES])
_WEIGHTS = np.array([f[3] for f in FEATURES])


@dataclass(frozen=True)
class Drift:
    """How generated data departs from the training distribution (default: not at all)."""

    shift: Mapping[str, float] = field(default_factory=dict)  # feature -> mean shift in std units
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.shift) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"unknown feature(s) {sorted(unknown)}; choose from {list(FEATURE_NAMES)}")
        if self.label_noise < 0:
            raise ValueError("label_noise must be >= 0")


def features(n: int, seed: int, drift: Drift = Drift()) -> np.ndarray:
    """``n`` rows of the six features, in FEATURE_NAMES order."""
    rng = np.random.default_rng(seed)
    shift = np.array([drift.shift.get(name, 0.0) for name in FEATURE_NAMES])
    return _MEANS + _STDS * (rng.standard_normal((n, len(FEATURES))) + shift)


def _signal(x: np.ndarray) -> np.ndarray:
    return ((x - _MEANS) / _STDS) @ _WEIGHTS


def classification(n: int, seed: int = 0, drift: Drift = Drift()) -> tuple[np.ndarray, np.ndarray]:
    """Rows and 0/1 labels drawn from a logistic model; ``label_noise`` flips that share of labels."""
    x = features(n, seed, drift)
    rng = np.random.default_rng(seed + 1)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-1.5 * _signal(x)))).astype(np.int64)
    flip = rng.random(n) < drift.label_noise
    return x, np.where(flip, 1 - y, y)


def regression(n: int, seed: int = 0, drift: Drift = Drift()) -> tuple[np.ndarray, np.ndarray]:
    """Rows and a linear target with unit noise; ``label_noise`` adds that many target stds of noise."""
    x = features(n, seed, drift)
    rng = np.random.default_rng(seed + 1)
    y = 50.0 + 10.0 * _signal(x) + rng.standard_normal(n)
    return x, y + rng.standard_normal(n) * drift.label_noise * 10.0 * float(np.linalg.norm(_WEIGHTS))
