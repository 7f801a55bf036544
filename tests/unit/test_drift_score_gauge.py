"""The operator's drift-score gauge ranks features on one scale per check."""

from __future__ import annotations

import datetime

import numpy as np
from prometheus_client import REGISTRY

from modelwarden.analysis.drift import FeatureDrift
from modelwarden.api.checks import DriftMethod
from modelwarden.api.driftpolicy import Evaluation, Verdict
from modelwarden.controller.telemetry import record_evaluation


def scores(policy: str) -> dict[str, float]:
    return {s.labels["feature"]: s.value for metric in REGISTRY.collect() if metric.name == "modelwarden_operator_drift_score"
            for s in metric.samples if s.labels["policy"] == policy}


def test_under_combined_the_gauge_is_the_effect_not_a_mix_of_ks_and_chi2_statistics():
    # "amount" was tested by KS (D = 0.2, a large shift), "country" by χ² (statistic 40, a small one on many levels).
    drift = FeatureDrift(check="drift/features", method=DriftMethod("combined"), threshold=0.01, names=("amount", "country"),
                         statistic=np.array([0.2, 40.0]), p_value=np.array([1e-9, 1e-4]), adjusted_p_value=np.array([2e-9, 1e-4]),
                         reference_samples=np.array([5000.0, 5000.0]), current_samples=np.array([5000.0, 5000.0]),
                         tested=np.array([True, True]), drifted=np.array([True, True]), mismatched=np.array([False, False]),
                         effect=np.array([0.5, 0.06]))
    evaluation = Evaluation(time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc), verdict=Verdict.FAIL)
    record_evaluation("ml", "gauge-test", evaluation, [drift], 0.01)
    assert scores("gauge-test") == {"amount": 0.5, "country": 0.06}


def test_a_distance_method_exports_its_distance():
    drift = FeatureDrift(check="drift/features", method=DriftMethod("psi"), threshold=0.2, names=("amount",),
                         statistic=np.array([0.31]), p_value=None, adjusted_p_value=None, reference_samples=np.array([5000.0]),
                         current_samples=np.array([5000.0]), tested=np.array([True]), drifted=np.array([True]),
                         mismatched=np.array([False]))
    evaluation = Evaluation(time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc), verdict=Verdict.FAIL)
    record_evaluation("ml", "gauge-psi", evaluation, [drift], 0.01)
    assert scores("gauge-psi") == {"amount": 0.31}
