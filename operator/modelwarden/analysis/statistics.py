"""Two-sample statistics on binned data, vectorised over features.

Every function takes per-bin counts ``reference`` and ``current`` of shape (F, B) (one row per
feature, zero-padded) and returns one value per row. Rows with no observations on a side yield
a neutral value (0 distance, p-value 1) rather than NaN: the caller marks them InsufficientData
from the sample sizes, and no NaN can leak into a verdict. Formulas and caveats: docs/statistics.md.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from modelwarden.api.checks import Correction

PSI_EPSILON = 1e-4
"""Proportion substituted for an empty bin, exactly as the seed's calculate_psi (and Evidently)."""
NEGLIGIBLE_PROPORTION = 1e-12


def proportions(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total; an all-zero row stays zero (not NaN)."""
    return _divide_rows(counts, counts.sum(axis=-1))


def _divide_rows(values: np.ndarray, totals: np.ndarray) -> np.ndarray:
    # A division, not a multiplication by 1/total: 1/total overflows for subnormal totals.
    return np.divide(values, totals[..., None], out=np.zeros_like(values, dtype=float), where=totals[..., None] > 0)


def psi(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Population Stability Index: Σ (p−q)·ln(p/q), empty bins replaced by PSI_EPSILON.

    Padding bins are empty on both sides and contribute exactly 0.
    """
    p = proportions(reference)
    q = proportions(current)
    # A proportion below any a real count gives (10^12 observations) is an empty bin: a subnormal
    # one would make p/q overflow to an infinite PSI.
    p = np.where(p < NEGLIGIBLE_PROPORTION, PSI_EPSILON, p)
    q = np.where(q < NEGLIGIBLE_PROPORTION, PSI_EPSILON, q)
    return np.sum((p - q) * np.log(p / q), axis=-1)


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kolmogorov–Smirnov D over the bucket edges and its asymptotic two-sample p-value.

    D is only evaluated at bucket edges, so it is never larger than the D of the raw samples,
    and the asymptotic Kolmogorov distribution overstates finite-sample tail probabilities:
    both make the test conservative (p-values too large, never too small).
    """
    reference_cdf = np.cumsum(reference, axis=-1)
    current_cdf = np.cumsum(current, axis=-1)
    n = reference_cdf[..., -1]
    m = current_cdf[..., -1]
    distance = np.abs(_divide_rows(reference_cdf, n) - _divide_rows(current_cdf, m)).max(axis=-1)
    effective_n = np.divide(n * m, n + m, out=np.zeros_like(n, dtype=float), where=(n > 0) & (m > 0))
    p_value = special.kolmogorov(np.sqrt(effective_n) * distance)
    return distance, np.clip(p_value, 0.0, 1.0)


# Cochran's rule: the χ² approximation needs about 5 expected observations per cell.
MIN_EXPECTED = 5.0


def chi2(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson χ² test of homogeneity of the 2×B table, bins empty on both sides dropped, and bins
    expecting fewer than ``MIN_EXPECTED`` observations on a side pooled into one.

    Without the pooling the test is anti-conservative exactly where it is used most: a sparse
    categorical (200 Zipf levels) against a large profile, with a small current window, puts
    hundreds of cells at an expected count far below 1, and its tail p-values come out too
    small (docs/statistics.md has the rates). After pooling it equals ``scipy.stats.chi2_contingency(correction=False)``
    on the pooled non-empty columns; degrees of freedom = those columns − 1 per row.
    """
    reference, current = _pool_sparse(np.asarray(reference, dtype=float), np.asarray(current, dtype=float))
    return _pearson(reference, current)


def _expected(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = reference.sum(axis=-1, keepdims=True)
    m = current.sum(axis=-1, keepdims=True)
    column = reference + current
    grand = n + m
    expected_ref = np.divide(column * n, grand, out=np.zeros_like(column, dtype=float), where=grand > 0)
    return expected_ref, column - expected_ref


def _pool_sparse(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move every bin expecting fewer than MIN_EXPECTED observations on either side into one extra
    bin per row (a no-op, by shape, when no row has such a bin)."""
    expected_ref, expected_cur = _expected(reference, current)
    sparse = (reference + current > 0) & (np.minimum(expected_ref, expected_cur) < MIN_EXPECTED)
    if not sparse.any():
        return reference, current

    def pooled(counts: np.ndarray) -> np.ndarray:
        return np.concatenate([np.where(sparse, 0.0, counts), np.where(sparse, counts, 0.0).sum(axis=-1, keepdims=True)], axis=-1)

    return pooled(reference), pooled(current)


def _pearson(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    column = reference + current
    expected_ref, expected_cur = _expected(reference, current)
    terms = np.divide((reference - expected_ref) ** 2, expected_ref, out=np.zeros_like(column, dtype=float), where=expected_ref > 0)
    terms += np.divide((current - expected_cur) ** 2, expected_cur, out=np.zeros_like(column, dtype=float), where=expected_cur > 0)
    statistic = terms.sum(axis=-1)
    dof = np.count_nonzero(column > 0, axis=-1) - 1
    p_value = np.where(dof > 0, stats.chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    return statistic, p_value


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance (natural log, as scipy.spatial.distance.jensenshannon), in [0, √ln2]."""
    p = proportions(reference)
    q = proportions(current)
    mixture = (p + q) / 2
    divergence = (special.rel_entr(p, mixture).sum(axis=-1) + special.rel_entr(q, mixture).sum(axis=-1)) / 2
    return np.sqrt(np.maximum(divergence, 0.0))


def hellinger(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Hellinger distance √(½ Σ (√p − √q)²), in [0, 1]."""
    difference = np.sqrt(proportions(reference)) - np.sqrt(proportions(current))
    return np.sqrt(0.5 * np.sum(difference**2, axis=-1))


def bin_points(le: np.ndarray) -> np.ndarray:
    """A representative value per bin: the midpoint of (previous le, le].

    The open-ended first bin (−∞, e₀] sits half a neighbouring width below e₀ and the +Inf bin
    half a width above the last edge (width 1 when there is no neighbour). Padding repeats the
    last real point, so it adds no distance.
    """
    upper = np.asarray(le, dtype=float)
    lower = np.concatenate([np.full((upper.shape[0], 1), -np.inf), upper[:, :-1]], axis=1)
    with np.errstate(invalid="ignore"):
        points = (lower + upper) / 2
        width_before = np.concatenate([np.full((upper.shape[0], 1), np.nan), np.diff(lower, axis=1)], axis=1)
        width_after = np.concatenate([np.diff(upper, axis=1), np.full((upper.shape[0], 1), np.nan)], axis=1)
    half_before = np.where(np.isfinite(width_before), width_before / 2, 0.5)
    half_after = np.where(np.isfinite(width_after), width_after / 2, 0.5)
    points = np.where(np.isneginf(lower) & np.isfinite(upper), upper - half_after, points)
    points = np.where(np.isposinf(upper) & np.isfinite(lower), lower + half_before, points)
    points = np.where(np.isneginf(lower) & np.isposinf(upper), 0.0, points)
    # Padding (NaN): carry the last real point forward.
    index = np.where(np.isnan(points), 0, np.arange(points.shape[1]))
    index = np.maximum.accumulate(index, axis=1)
    points = np.take_along_axis(points, index, axis=1)
    return np.nan_to_num(points, nan=0.0)


def wasserstein(reference: np.ndarray, current: np.ndarray, le: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance between the binned distributions on ``bin_points``, divided by
    the reference's standard deviation on the same points (as Evidently), so one threshold fits
    features of any scale. A reference with zero spread is not normalised.
    """
    points = bin_points(le)
    p = proportions(reference)
    q = proportions(current)
    gaps = np.diff(points, axis=1)
    distance = np.sum(np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1))[:, :-1] * gaps, axis=1)
    mean = np.sum(p * points, axis=1, keepdims=True)
    std = np.sqrt(np.sum(p * (points - mean) ** 2, axis=1))
    return np.divide(distance, std, out=distance.copy(), where=std > 0)


def total_variation(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """½ Σ |p − q|: the share of the distribution that moved, in [0, 1] (categorical effect size)."""
    return 0.5 * np.abs(proportions(reference) - proportions(current)).sum(axis=-1)


def adjust_p_values(p_values: np.ndarray, correction: Correction) -> np.ndarray:
    """Multiple-testing correction across features.

    ``fdr``: Benjamini–Hochberg adjusted p-values (``scipy.stats.false_discovery_control``, step-up,
    monotone); controls the expected share of false discoveries, and the chance of any false alarm
    when nothing drifted. scipy rejects NaN; none reaches it (counts are repaired to finite,
    non-negative values before any test, and empty rows get p = 1).
    ``bonferroni``: p·m (family-wise error rate). ``none``: unchanged.
    """
    p = np.asarray(p_values, dtype=float)
    count = p.size
    if count == 0 or correction is Correction.NONE:
        return p.copy()
    if correction is Correction.BONFERRONI:
        return np.minimum(p * count, 1.0)
    # A copy: scipy hands a single p-value back as the very array it was given.
    return np.array(stats.false_discovery_control(p, method="bh"), dtype=float)
