"""Feature-level drift decisions: statistic per feature, multiple-testing correction, dataset verdict.

A feature is *tested* when both sides have at least ``minSamples`` observations and their bucket
edges agree. A tested feature *drifts* when its corrected p-value is below alpha (ks, chi2) or
its distance reaches the threshold (psi, jensenshannon, wasserstein, hellinger). The check fails
when the drifted share of tested features reaches ``driftShare`` — by default any single
drifted feature, which is safe because p-values are corrected across features.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from modelwarden.analysis import statistics
from modelwarden.analysis.histograms import AlignedHistograms
from modelwarden.analysis.verdicts import result
from modelwarden.api.checks import DISTANCE_DEFAULTS, Correction, DriftMethod
from modelwarden.api.driftpolicy import CheckResult, Verdict
from modelwarden.api.policystatus import BUCKET_EDGES_DIFFER

DEFAULT_THRESHOLDS: dict[DriftMethod, float] = {
    DriftMethod.COMBINED: 0.01,
    DriftMethod.KS: 0.01,
    DriftMethod.CHI2: 0.01,
    **{DriftMethod(method): default for method, default in DISTANCE_DEFAULTS.items()},
}
P_VALUE_METHODS = frozenset({DriftMethod.COMBINED, DriftMethod.KS, DriftMethod.CHI2})
NAMED_IN_MESSAGE = 5


@dataclass(frozen=True)
class FeatureDrift:
    """Per-feature numbers behind a drift check (arrays aligned with ``names``)."""

    check: str
    method: DriftMethod
    threshold: float
    names: tuple[str, ...]
    statistic: np.ndarray
    p_value: np.ndarray | None  # raw p-values for ks/chi2, else None
    adjusted_p_value: np.ndarray | None  # after the correction, NaN where not tested
    reference_samples: np.ndarray
    current_samples: np.ndarray
    tested: np.ndarray  # bool
    drifted: np.ndarray  # bool
    mismatched: np.ndarray  # bool: bucket edges differ between reference and current
    family: int | None = None  # how many tests the correction spanned (None: this check's tested features)
    warn_threshold: float | None = None  # distances: the level of a Warning (below threshold)
    effect: np.ndarray | None = None  # p-value methods: W1/σ (numeric) or total variation (categorical)
    min_effect: float = 0.0  # p-value methods: a drift needs an effect at least this large

    @property
    def warned(self) -> np.ndarray:
        """Tested features whose distance reached the warning level (including any that drifted
        while the check did not fail: short of driftShare, they are warnings too)."""
        if self.warn_threshold is None or self.p_value is not None:
            return np.zeros(len(self.names), dtype=bool)
        return self.tested & (self.statistic >= self.warn_threshold)

    def verdict_of(self, index: int) -> Verdict:
        if self.mismatched[index]:
            return Verdict.ERROR
        if not self.tested[index]:
            return Verdict.INSUFFICIENT_DATA
        if self.drifted[index]:
            return Verdict.FAIL
        return Verdict.WARNING if self.warned[index] else Verdict.PASS

    @property
    def drifted_names(self) -> list[str]:
        return [self.names[i] for i in np.flatnonzero(self.drifted)]


def scores(method: DriftMethod, histograms: AlignedHistograms, categorical: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(statistic, p-value or None) per feature.

    With ks, a feature known to be categorical (from a profile) is tested with χ² instead:
    the order of category codes is arbitrary, so a CDF distance would be meaningless.
    """
    ref, cur = histograms.reference, histograms.current
    match method:
        case DriftMethod.COMBINED:
            # KS sees location, χ² on the same bins sees spread and shape (KS found a variance ×1.3
            # in 2 % of evaluations, χ² in 95 %): a feature's p-value is twice the smaller one
            # (Bonferroni over its two tests), reported with the statistic that gave it.
            ks_statistic, ks_p = scores(DriftMethod.KS, histograms, categorical)
            chi_statistic, chi_p = statistics.chi2(ref, cur)
            statistic = np.where(chi_p < ks_p, chi_statistic, ks_statistic)
            p_value = np.minimum(2 * np.minimum(ks_p, chi_p), 1.0)
            if categorical is not None and categorical.any():  # ks already stood in χ² there: one test, not two
                statistic[categorical], p_value[categorical] = chi_statistic[categorical], chi_p[categorical]
            return statistic, p_value
        case DriftMethod.KS:
            statistic, p_value = statistics.ks(ref, cur)
            if categorical is not None and categorical.any():
                chi_statistic, chi_p = statistics.chi2(ref[categorical], cur[categorical])
                statistic[categorical], p_value[categorical] = chi_statistic, chi_p
            return statistic, p_value
        case DriftMethod.CHI2:
            return statistics.chi2(ref, cur)
        case DriftMethod.PSI:
            return statistics.psi(ref, cur), None
        case DriftMethod.JENSEN_SHANNON:
            return statistics.jensen_shannon(ref, cur), None
        case DriftMethod.WASSERSTEIN:
            return statistics.wasserstein(ref, cur, histograms.le), None
        case DriftMethod.HELLINGER:
            return statistics.hellinger(ref, cur), None
    raise ValueError(f"unknown drift method {method!r}")


def detect(
    check: str,
    histograms: AlignedHistograms,
    method: DriftMethod,
    threshold: float | None,
    correction: Correction,
    min_samples: int,
    categorical: np.ndarray | None = None,
    warn_threshold: float | None = None,
    min_effect: float = 0.0,
) -> FeatureDrift:
    """Decide, per feature, whether it is tested and whether it drifted (or, for a distance, reached
    the warning level)."""
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    reference_samples = histograms.reference_total
    current_samples = histograms.current_total
    tested = ~histograms.mismatched & (reference_samples >= min_samples) & (current_samples >= min_samples)
    statistic, p_value = scores(method, histograms, categorical)
    adjusted: np.ndarray | None = None
    effect: np.ndarray | None = None
    if p_value is not None:
        effect = effect_sizes(histograms, categorical)
        adjusted = np.full(p_value.shape, np.nan)
        adjusted[tested] = statistics.adjust_p_values(p_value[tested], correction)
        drifted = tested & (np.nan_to_num(adjusted, nan=1.0) < threshold) & (effect >= min_effect)
    else:
        drifted = tested & (statistic >= threshold)
    return FeatureDrift(
        check=check,
        method=method,
        threshold=threshold,
        names=histograms.names,
        statistic=statistic,
        p_value=p_value,
        adjusted_p_value=adjusted,
        reference_samples=reference_samples,
        current_samples=current_samples,
        tested=tested,
        drifted=drifted,
        mismatched=histograms.mismatched,
        warn_threshold=warn_threshold,
        effect=effect,
        min_effect=min_effect if p_value is not None else 0.0,
    )


def effect_sizes(histograms: AlignedHistograms, categorical: np.ndarray | None) -> np.ndarray:
    """How large each feature's change is, whatever its significance: the Wasserstein distance
    in reference standard deviations for numeric features, total variation for categorical ones."""
    ref, cur = histograms.reference, histograms.current
    effect = statistics.wasserstein(ref, cur, histograms.le)
    if categorical is not None and categorical.any():
        effect[categorical] = statistics.total_variation(ref[categorical], cur[categorical])
    return effect


def adjust_together(reports: list[FeatureDrift], correction: Correction) -> list[FeatureDrift]:
    """One multiple-testing family over every report's tested p-values: a policy's feature and
    prediction checks share one error budget, so a prediction histogram is not an extra test at
    the full level on top of the features' corrected ones. Reports without p-values (distances)
    pass through."""
    tested = [report for report in reports if report.p_value is not None]
    pooled = np.concatenate([report.p_value[report.tested] for report in tested if report.p_value is not None]) if tested else np.empty(0)
    adjusted = statistics.adjust_p_values(pooled, correction)
    joint, start = [], 0
    for report in reports:
        if report.p_value is None:
            joint.append(report)
            continue
        count = int(report.tested.sum())
        mine = np.full(report.p_value.shape, np.nan)
        mine[report.tested] = adjusted[start:start + count]
        start += count
        drifted = report.tested & (np.nan_to_num(mine, nan=1.0) < report.threshold)
        if report.effect is not None:
            drifted &= report.effect >= report.min_effect
        joint.append(replace(report, adjusted_p_value=mine, drifted=drifted, family=int(pooled.size)))
    return joint


def verdict(drift: FeatureDrift, drift_share: float | None, min_samples: int, correction: Correction) -> CheckResult:
    """The check result of a drift detection: Fail > Error (edge mismatch) > InsufficientData > Pass.

    A Pass needs every feature tested: one missing from a window (or below minSamples) makes the
    check InsufficientData, which never acts and never lets a canary gate pass."""
    tested = int(drift.tested.sum())
    drifted = int(drift.drifted.sum())
    share = drifted / tested if tested else 0.0
    share_threshold = drift_share if drift_share is not None else (1 / tested if tested else None)
    samples = float(drift.current_samples[drift.tested].min()) if tested else float(drift.current_samples.max(initial=0.0))
    rule = _rule(drift, correction)
    skipped = _skipped(drift, min_samples)
    if drifted and (drift_share is None or share >= drift_share):
        names = drift.drifted_names
        listed = ", ".join(f"{name} ({_detail(drift, drift.names.index(name))})" for name in names[:NAMED_IN_MESSAGE])
        more = f" and {len(names) - NAMED_IN_MESSAGE} more" if len(names) > NAMED_IN_MESSAGE else ""
        message = f"{drifted} of {tested} drifted ({rule}): {listed}{more}{skipped}"
        return result(drift.check, Verdict.FAIL, message, share, share_threshold, samples)
    if drift.mismatched.any():
        names = [drift.names[i] for i in np.flatnonzero(drift.mismatched)]
        message = f"bucket edges differ between reference and current for {', '.join(names[:NAMED_IN_MESSAGE])}" + (
            f" and {len(names) - NAMED_IN_MESSAGE} more" if len(names) > NAMED_IN_MESSAGE else ""
        )
        return result(drift.check, Verdict.ERROR, message, share, share_threshold, samples).model_copy(
            update={"reason": BUCKET_EDGES_DIFFER})
    if not tested:
        # Every row observes every feature: the most-observed feature tells how many rows a side had.
        message = (f"too few observations to test: the current window has {_count(drift.current_samples)}, the reference "
                   f"{_count(drift.reference_samples)} (need {min_samples} on each side)")
        if not drift.names:
            message = "no histograms to test"
        return result(drift.check, Verdict.INSUFFICIENT_DATA, message, None, share_threshold, samples)
    if skipped:  # never a Pass by omission: a feature missing from a window was not shown to be fine
        untested = [drift.names[i] for i in np.flatnonzero(~drift.tested & ~drift.mismatched)]
        message = (f"{len(untested)} of {len(drift.names)} not tested (fewer than {min_samples} observations on a side): "
                   f"{', '.join(untested[:NAMED_IN_MESSAGE])}" + (f" and {len(untested) - NAMED_IN_MESSAGE} more" if len(untested) > NAMED_IN_MESSAGE else "")
                   + f"; {drifted} of {tested} tested drifted ({rule})")
        return result(drift.check, Verdict.INSUFFICIENT_DATA, message, share, share_threshold, samples)
    warned = drift.warned
    if warned.any():  # shown and announced, never acted on
        names = [drift.names[i] for i in np.flatnonzero(warned)]
        listed = ", ".join(f"{name} ({_detail(drift, drift.names.index(name))})" for name in names[:NAMED_IN_MESSAGE])
        more = f" and {len(names) - NAMED_IN_MESSAGE} more" if len(names) > NAMED_IN_MESSAGE else ""
        message = (f"{len(names)} of {tested} at the warning level ({drift.method.value} >= {drift.warn_threshold:g}): "
                   f"{listed}{more}; {drifted} of {tested} drifted ({rule})")
        return result(drift.check, Verdict.WARNING, message, share, share_threshold, samples)
    return result(drift.check, Verdict.PASS, f"{drifted} of {tested} drifted ({rule})", share, share_threshold, samples)


def _rule(drift: FeatureDrift, correction: Correction) -> str:
    if drift.method in P_VALUE_METHODS:
        family = drift.family if drift.family is not None else int(drift.tested.sum())
        adjusted = "" if correction is Correction.NONE or family <= 1 else f"{correction.value}-adjusted over {family} tests "
        floor = f" and effect >= {drift.min_effect:g}" if drift.min_effect else ""
        return f"{drift.method.value}, {adjusted}p < {drift.threshold:.3g}{floor}"
    return f"{drift.method.value} >= {drift.threshold:g}"


def _detail(drift: FeatureDrift, index: int) -> str:
    if drift.adjusted_p_value is not None:
        effect = f", effect={drift.effect[index]:.3g}" if drift.effect is not None else ""
        return f"{drift.method.value}={drift.statistic[index]:.3g}, p={drift.adjusted_p_value[index]:.2g}{effect}"
    return f"{drift.method.value}={drift.statistic[index]:.3g}"


def _count(samples: np.ndarray) -> int:
    return int(np.nan_to_num(samples, nan=0.0).max(initial=0.0))


def _skipped(drift: FeatureDrift, min_samples: int) -> str:
    untested = int((~drift.tested & ~drift.mismatched).sum())
    return f"; {untested} not tested (fewer than {min_samples} observations)" if untested else ""
