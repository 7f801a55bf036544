"""The default drift policy, calibrated by simulation (seeded, vectorised).

1000 features with 20 equiprobable bins (the profile's quantile edges), reference and current
windows drawn independently. Binning raw samples and drawing multinomial bin counts are the same
distribution, so this is exactly what the engine would see from Prometheus.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from scipy import stats

from modelwarden.analysis.judge import Observations, Reference, TrackWindow, judge
from modelwarden.analysis.histograms import BucketMatrix
from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict

FEATURES = 1000
EVALUATIONS = 200
EDGES = stats.norm.ppf(np.arange(1, 20) / 20)
NAMES = [f"f{i:04d}" for i in range(FEATURES)]
NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
# The API defaults: combined (ks and χ²), alpha 0.01, Benjamini–Hochberg, any drifted feature fails,
# minSamples 1000, an effect of at least 0.05. One evaluation alone spends the policy's whole alpha.
DEFAULT_POLICY = DriftPolicySpec.model_validate(
    {"targetRef": {"name": "m"}, "reference": {"track": "stable"}, "drift": {"predictions": False}}
)


def probabilities(shift: float = 0.0) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], stats.norm.cdf(EDGES - shift), [1.0]]))


def evaluate(rng: np.random.Generator, observations: int, shifted: int | None = None):
    reference = rng.multinomial(observations, probabilities(), size=FEATURES)
    current = rng.multinomial(observations, probabilities(), size=FEATURES)
    if shifted is not None:
        current[shifted] = rng.multinomial(observations, probabilities(0.2))
    edges = [EDGES] * FEATURES
    data = Observations(
        current=TrackWindow(features=BucketMatrix.from_bins(NAMES, edges, current)),
        reference=Reference("simulated", BucketMatrix.from_bins(NAMES, edges, reference), BucketMatrix.empty()),
    )
    return judge(DEFAULT_POLICY, data, NOW)


def test_defaults_are_what_the_calibration_assumes():
    drift = DEFAULT_POLICY.drift
    assert (drift.method.value, drift.threshold, drift.correction.value, drift.drift_share) == ("combined", None, "fdr", None)
    assert (DEFAULT_POLICY.min_samples, DEFAULT_POLICY.alpha, drift.min_effect) == (1000, 0.01, None)


def test_no_drift_fails_about_alpha_of_single_evaluations():
    """A single look at the whole alpha (1 %): χ² is exact where binned KS was conservative, so
    false Fails now come at about the nominal rate (3 of 200 here; Binomial(200, 1 %) puts 5 or
    more at 5 %). Over time the policy spends alpha across its looks (benchmarks/calibration.py,
    tests/simulation)."""
    rng = np.random.default_rng(20250101)
    verdicts = [evaluate(rng, 5000).evaluation.verdict for _ in range(EVALUATIONS)]
    assert verdicts.count(Verdict.FAIL) <= 4
    assert set(verdicts) <= {Verdict.PASS, Verdict.FAIL}


def test_a_small_shift_of_one_feature_among_a_thousand_is_detected():
    rng = np.random.default_rng(7)
    detected = 0
    for _ in range(EVALUATIONS):
        report = evaluate(rng, 5000, shifted=123)
        detected += report.evaluation.verdict is Verdict.FAIL and "f0123" in report.drift[0].drifted_names
    assert detected >= 0.9 * EVALUATIONS


@pytest.mark.parametrize("shifted", [None, 5])
def test_small_windows_are_insufficient_data_never_fail(shifted):
    rng = np.random.default_rng(3)
    verdicts = {evaluate(rng, 50, shifted).evaluation.verdict for _ in range(EVALUATIONS)}
    assert verdicts == {Verdict.INSUFFICIENT_DATA}
