"""Verdicts: precedence, InsufficientData below minSamples, Error isolation, profile references."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from modelwarden.analysis.judge import Kind, Observations, Reference, Side, TrackWindow, WindowPart, judge
from modelwarden.analysis.histograms import BucketMatrix
from modelwarden.analysis.reference import reference_from_profile
from modelwarden.analysis.verdicts import aggregate, bounded, result
from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.contract.profile import Profile
from modelwarden.serving.profile import categorical_distribution, numeric_distribution, prediction_profile

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
F, P, E, I = Verdict.FAIL, Verdict.PASS, Verdict.ERROR, Verdict.INSUFFICIENT_DATA


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [([], P), ([P, P], P), ([P, I], I), ([I, E, P], E), ([E, F, I, P], F), ([F], F)],
)
def test_precedence_fail_error_insufficient_pass(verdicts, expected):
    assert aggregate([result(f"c{i}", v, "") for i, v in enumerate(verdicts)]) is expected


@pytest.mark.parametrize(
    ("value", "samples", "expected"),
    [(0.5, 10, I), (0.5, None, I), (None, 5000, I), (float("nan"), 5000, I), (0.5, 5000, F), (0.9, 5000, P), (1.5, 5000, F)],
)
def test_bounded_check(value, samples, expected):
    check = bounded("performance/accuracy", value, 0.8, 1.0, samples, 1000, "accuracy")
    assert check.verdict is expected
    assert check.value is None or np.isfinite(check.value)


def _spec(**fields) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, **fields})


def _matrix(counts: dict[str, list[int]], edges=(0.0, 1.0, 2.0)) -> BucketMatrix:
    return BucketMatrix.from_bins(list(counts), [list(edges)] * len(counts), list(counts.values()))


def test_query_failures_make_only_their_checks_error():
    spec = _spec(
        reference={"track": "stable"},
        drift={"predictions": False},
        performance=[{"metric": "accuracy", "min": 0.5}, {"metric": "error_rate", "max": 0.1}],
    )
    observations = Observations(
        current=TrackWindow(confusion={("a", "a"): 2000.0}, counters={"requests": 5000.0, "errors": 1000.0, "predictions": 5000.0}),
        reference=Reference("r", BucketMatrix.empty(), BucketMatrix.empty()),
        failures={WindowPart(Side.CURRENT, Kind.FEATURES): "Unreachable: connection refused"},
    )
    evaluation = judge(spec, observations, NOW).evaluation
    verdicts = {r.check: r.verdict for r in evaluation.results}
    assert verdicts == {"drift/features": E, "performance/accuracy": P, "performance/error_rate": F}
    assert evaluation.verdict is F  # real evidence is still reported; only Fail ever acts
    assert evaluation.samples == 5000


def test_edge_mismatch_is_an_error_not_a_fail():
    spec = _spec(reference={"track": "stable"}, drift={"predictions": False})
    reference = _matrix({"a": [500, 500, 500, 500]})
    current = _matrix({"a": [500, 500, 500, 500]}, edges=(0.0, 1.0, 3.0))
    observations = Observations(TrackWindow(features=current), Reference("r", reference, BucketMatrix.empty()))
    evaluation = judge(spec, observations, NOW).evaluation
    assert evaluation.verdict is E
    assert "bucket edges differ" in evaluation.results[0].message


def test_drift_share_hides_a_single_feature_when_set():
    counts = {f"f{i}": [1000, 1000, 1000, 1000] for i in range(4)}
    drifted = dict(counts, f0=[3000, 500, 300, 200])
    reference = Reference("r", _matrix(counts), BucketMatrix.empty())
    observations = Observations(TrackWindow(features=_matrix(drifted)), reference)
    default = judge(_spec(reference={"track": "stable"}, drift={"predictions": False}), observations, NOW)
    assert default.evaluation.verdict is F and default.drift[0].drifted_names == ["f0"]
    half = judge(_spec(reference={"track": "stable"}, drift={"predictions": False, "driftShare": 0.5}), observations, NOW)
    assert half.evaluation.verdict is P and half.evaluation.results[0].value == 0.25


@pytest.mark.parametrize("method", ["psi", "ks", "chi2", "jensenshannon", "wasserstein", "hellinger"])
def test_every_method_finds_a_large_drift_and_passes_identical_data(method):
    counts = {"a": [1000, 1000, 1000, 1000], "b": [500, 1500, 1500, 500]}
    reference = Reference("r", _matrix(counts), BucketMatrix.empty())
    spec = _spec(reference={"track": "stable"}, drift={"predictions": False, "method": method})
    same = judge(spec, Observations(TrackWindow(features=_matrix(counts)), reference), NOW)
    assert same.evaluation.verdict is P
    moved = judge(spec, Observations(TrackWindow(features=_matrix(dict(counts, b=[100, 300, 1500, 2100]))), reference), NOW)
    assert moved.drift[0].drifted_names == ["b"]


def test_profile_reference_with_a_categorical_feature():
    rng = np.random.default_rng(1)
    train_age = rng.normal(40, 10, 20000)
    train_color = rng.choice(["red", "green", "blue"], 20000, p=[0.5, 0.3, 0.2])
    profile = Profile(
        target="label",
        rows=20000,
        bins=20,
        features=[numeric_distribution("age", train_age), categorical_distribution("color", train_color)],
        prediction=prediction_profile("regression", "model", rng.normal(0, 1, 20000)),
    )
    reference = reference_from_profile(profile.to_json())
    assert reference.categorical == {"color"}

    def live(age: np.ndarray, color: np.ndarray) -> BucketMatrix:
        """What the model server would export: values bucketed on the profile's edges (colors as level codes)."""
        codes = np.searchsorted(profile.features[1].levels, color)
        counts = [
            np.bincount(np.searchsorted(feature.edges, values, side="left"), minlength=len(feature.edges) + 1)
            for feature, values in zip(profile.features, (age, codes))
        ]
        return BucketMatrix.from_bins(["age", "color"], [f.edges for f in profile.features], counts)

    spec = _spec(reference={"profileRef": {"configMap": {"name": "p"}}}, drift={})
    clean = live(rng.normal(40, 10, 5000), rng.choice(["red", "green", "blue"], 5000, p=[0.5, 0.3, 0.2]))
    report = judge(spec, Observations(TrackWindow(features=clean), reference), NOW)
    assert report.drift[0].drifted_names == []
    shifted = live(rng.normal(40, 10, 5000), rng.choice(["red", "green", "blue"], 5000, p=[0.3, 0.3, 0.4]))
    report = judge(spec, Observations(TrackWindow(features=shifted), reference), NOW)
    assert report.drift[0].drifted_names == ["color"]
    assert report.evaluation.verdict is F
    # the prediction check has no live prediction histogram: InsufficientData, not Fail
    assert {r.check: r.verdict for r in report.evaluation.results}["drift/prediction"] is I


def test_comparison_needs_min_samples_on_both_tracks():
    spec = _spec(track="canary", comparison={"track": "stable", "metrics": ["error_rate"]})
    observations = Observations(
        current=TrackWindow(counters={"requests": 5000.0, "errors": 500.0}),
        baseline=TrackWindow(counters={"requests": 100.0, "errors": 0.0}),
    )
    assert judge(spec, observations, NOW).evaluation.verdict is I


def test_features_missing_from_a_window_are_insufficient_data_never_a_pass_by_omission():
    counts = {name: [1000, 1000, 1000, 1000] for name in ("a", "b", "c")}
    reference = Reference("r", _matrix(counts), BucketMatrix.empty())
    spec = _spec(reference={"track": "stable"}, drift={"predictions": False})
    partial = judge(spec, Observations(TrackWindow(features=_matrix({"a": counts["a"]})), reference), NOW).evaluation
    assert partial.verdict is I, partial.results
    assert "2 of 3 not tested" in partial.results[0].message and "b, c" in partial.results[0].message
    whole = judge(spec, Observations(TrackWindow(features=_matrix(counts)), reference), NOW).evaluation
    assert whole.verdict is P
    # Evidence of drift on what is there still counts: a Fail is not hidden by the missing features.
    drifted = judge(spec, Observations(TrackWindow(features=_matrix({"a": [3000, 500, 300, 200]})), reference), NOW)
    assert drifted.evaluation.verdict is F


def test_precision_without_class_names_the_positive_class_or_says_it_cannot():
    spec = _spec(performance=[{"metric": "precision", "min": 0.5}, {"metric": "recall", "min": 0.5, "class": "legit"}])
    binary = {("1", "1"): 400.0, ("1", "0"): 600.0, ("0", "0"): 19000.0}
    precision, _ = judge(spec, Observations(TrackWindow(confusion=binary)), NOW).evaluation.results
    assert (precision.verdict, precision.value) == (F, pytest.approx(0.4))
    assert precision.message.startswith("precision of class 1 (the positive class) 0.4 is below the minimum 0.5 (at most 0.44")
    named = {("fraud", "fraud"): 400.0, ("fraud", "legit"): 600.0, ("legit", "legit"): 19000.0}
    unnamed, recall = judge(spec, Observations(TrackWindow(confusion=named)), NOW).evaluation.results
    assert unnamed.verdict is E and "labels ['fraud', 'legit'] may be a binary model's: set class" in unnamed.message
    assert recall.verdict is P  # a named class needs no guess


def test_the_prediction_histogram_shares_the_features_correction():
    """50 unchanged features and a prediction histogram at raw p = 0.003: alone it would fail at
    p < 0.01; as one test among 51 (fdr) it does not, and the message says over how many."""
    features = {f"f{i}": [1250, 1250, 1250, 1250] for i in range(50)}
    reference = Reference("r", _matrix(features), _matrix({"": [1250, 1250, 1250, 1250]}))
    shifted = _matrix({"": [1430, 1250, 1250, 1070]})
    observations = Observations(TrackWindow(features=_matrix(features), prediction=shifted), reference)
    report = judge(_spec(reference={"track": "stable"}, drift={"method": "ks"}), observations, NOW)
    prediction = next(r for r in report.drift if r.check == "drift/prediction")
    assert prediction.p_value[0] == pytest.approx(0.00307, abs=1e-5)
    assert prediction.adjusted_p_value[0] == pytest.approx(0.00307 * 51, abs=1e-3)
    results = {r.check: r for r in report.evaluation.results}
    assert results["drift/prediction"].verdict is P
    assert "ks, fdr-adjusted over 51 tests p < 0.01" in results["drift/prediction"].message
    assert [r.check for r in report.evaluation.results] == ["drift/features", "drift/prediction"]
    # Without the features' company (correction none) the same histogram fails, as before.
    alone = judge(_spec(reference={"track": "stable"}, drift={"method": "ks", "correction": "none"}), observations, NOW)
    assert {r.check: r.verdict for r in alone.evaluation.results}["drift/prediction"] is F


def test_a_distance_at_the_warning_level_is_a_warning_that_passes():
    spec = _spec(reference={"track": "stable"}, drift={"method": "psi", "warnThreshold": 0.1, "predictions": False})
    reference = _matrix({"calm": [2500, 2500, 2500, 2500], "watch": [2500, 2500, 2500, 2500]})
    current = _matrix({"calm": [2500, 2500, 2500, 2500], "watch": [3700, 2500, 2500, 1300]})  # psi ≈ 0.125
    evaluation = judge(spec, Observations(TrackWindow(features=current), Reference("r", reference, BucketMatrix.empty())), NOW).evaluation
    (check,) = evaluation.results
    assert evaluation.verdict is Verdict.WARNING and check.verdict is Verdict.WARNING
    assert check.message.startswith("1 of 2 at the warning level (psi >= 0.1): watch (psi=0.126); 0 of 2 drifted (psi >= 0.25)")
    # Past threshold it is a Fail, not a warning.
    drifted = _matrix({"calm": [2500, 2500, 2500, 2500], "watch": [5000, 2500, 2000, 500]})
    failed = judge(spec, Observations(TrackWindow(features=drifted), Reference("r", reference, BucketMatrix.empty())), NOW).evaluation
    assert failed.verdict is F


@pytest.mark.parametrize(("drift", "message"), [
    ({"method": "ks", "warnThreshold": 0.1}, "warnThreshold applies to the distances"),
    ({"method": "psi", "warnThreshold": 0.25}, "warnThreshold must be below threshold"),
    ({"method": "psi", "threshold": 0.2, "warnThreshold": 0.2}, "warnThreshold must be below threshold"),
])
def test_warn_threshold_is_for_distances_below_their_threshold(drift, message):
    with pytest.raises(ValueError, match=message):
        _spec(reference={"track": "stable"}, drift=drift)


def test_without_scores_the_predicted_classes_are_the_prediction_check():
    spec = _spec(reference={"track": "stable"}, drift={"features": ["a"]})
    features = _matrix({"a": [500, 500, 500, 500]})
    reference = Reference("r", features, BucketMatrix.empty(), classes={"0": 1500.0, "1": 500.0})
    same = judge(spec, Observations(TrackWindow(features=features, classes={"0": 1510.0, "1": 490.0}), reference), NOW).evaluation
    moved = judge(spec, Observations(TrackWindow(features=features, classes={"0": 1000.0, "1": 900.0, "2": 100.0}), reference), NOW).evaluation
    assert [(r.check, r.verdict, r.samples) for r in same.results] == [("drift/features", P, 2000), ("drift/prediction", P, 2000)]
    assert [(r.check, r.verdict) for r in moved.results][1] == ("drift/prediction", F)  # a class the reference never predicted
    failed = Observations(TrackWindow(features=features), reference, failures={WindowPart(Side.CURRENT, Kind.CLASSES): "Unreachable: refused"})
    assert {r.check: r.verdict for r in judge(spec, failed, NOW).evaluation.results}["drift/prediction"] is E


def test_a_multiclass_model_without_feedback_is_insufficient_data_not_a_crash():
    spec = _spec(reference={"profileRef": {"configMap": {"name": "p", "key": "profile.json"}}},
                 performance=[{"metric": "f1", "min": 0.5}])
    profile = Profile.model_validate({
        "target": "y", "rows": 30, "bins": 3, "features": [],
        "prediction": {**categorical_distribution("prediction", ["a", "b", "c"] * 10).model_dump(by_alias=True),
                       "task": "classification", "source": "model"},
    })
    observations = Observations(TrackWindow(confusion={}), Reference("profile", BucketMatrix.empty(), BucketMatrix.empty(), profile=profile))
    (check,) = judge(spec, observations, NOW).evaluation.results
    assert check.verdict is I and "macro average over the profile's 3 classes" in check.message


def test_a_check_with_both_limits_splits_its_level_over_the_two_sides():
    from modelwarden.analysis.bounds import side_level

    assert (side_level(0.01, 0.8, None), side_level(0.01, None, 0.9), side_level(0.01, 0.8, 0.99)) == (0.01, 0.01, 0.005)


def test_with_drift_share_unmet_a_drifted_distance_is_a_warning_and_each_feature_says_so():
    spec = _spec(reference={"track": "stable"}, drift={"method": "psi", "warnThreshold": 0.1, "driftShare": 0.6, "predictions": False})
    reference = _matrix({"calm": [2500, 2500, 2500, 2500], "moved": [2500, 2500, 2500, 2500]})
    current = _matrix({"calm": [2500, 2500, 2500, 2500], "moved": [5000, 2500, 2000, 500]})  # psi > 0.25, 1 of 2 < driftShare
    report = judge(spec, Observations(TrackWindow(features=current), Reference("r", reference, BucketMatrix.empty())), NOW)
    assert report.evaluation.verdict is Verdict.WARNING
    assert [report.drift[0].verdict_of(i) for i in range(2)] == [P, F]
    watched = _matrix({"calm": [2500, 2500, 2500, 2500], "moved": [3700, 2500, 2500, 1300]})  # psi ≈ 0.126
    report = judge(spec, Observations(TrackWindow(features=watched), Reference("r", reference, BucketMatrix.empty())), NOW)
    assert [report.drift[0].verdict_of(i) for i in range(2)] == [P, Verdict.WARNING]
