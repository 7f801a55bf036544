"""Label-free performance estimates (analysis.estimated): the pure estimator against hand-computed
cases and simulated calibrated scores, the profile's calibration, the judge's verdicts and refusals,
and what the collector fetches for them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from modelwarden.analysis.estimated import (
    Confusion,
    EdgeMismatch,
    ScoreCalibration,
    Uncalibrated,
    bucket_midpoints,
    expected_confusion,
    labelled_confusion,
)
from modelwarden.analysis.histograms import BucketMatrix
from modelwarden.analysis.judge import Kind, Observations, Side, TrackWindow, WindowPart, judge
from modelwarden.analysis.reference import reference_from_profile
from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.contract.profile import Profile
from modelwarden.prometheus.collect import Target, collect, plan_queries
from modelwarden.prometheus.errors import NoData
from modelwarden.prometheus.provider import InstantVector
from modelwarden.serving.profile import numeric_distribution, prediction_profile

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
PROFILE_REF = {"profileRef": {"configMap": {"name": "p", "key": "profile.json"}}}
PREDICTION = WindowPart(Side.CURRENT, Kind.PREDICTION)


# -- the estimator, by hand ---------------------------------------------------------------------

def test_expected_confusion_by_hand():
    confusion = expected_confusion([10, 20, 30, 40], [0.1, 0.4, 0.7, 0.9], [False, False, True, True])
    # TP = 30·0.7 + 40·0.9, FP = 30·0.3 + 40·0.1, FN = 10·0.1 + 20·0.4, TN = 10·0.9 + 20·0.6
    assert (confusion.tp, confusion.fp, confusion.fn, confusion.tn) == pytest.approx((57, 13, 9, 21))
    assert confusion.metric("accuracy") == pytest.approx(0.78)
    assert confusion.metric("precision") == pytest.approx(57 / 70)
    assert confusion.metric("recall") == pytest.approx(57 / 66)
    assert confusion.metric("f1") == pytest.approx(114 / 136)


def test_labelled_confusion_by_hand():
    confusion = labelled_confusion([10, 20, 30, 40], [1, 6, 22, 37], [False, False, True, True])
    assert (confusion.tp, confusion.fp, confusion.fn, confusion.tn) == (59, 11, 7, 23)
    assert confusion.metric("accuracy") == pytest.approx(0.82)


def test_undefined_ratios_are_none_and_unknown_metrics_are_refused():
    nothing_above = Confusion(tp=0, fp=0, fn=3, tn=7)
    assert nothing_above.metric("precision") is None and nothing_above.metric("recall") == 0.0
    assert Confusion(0, 0, 0, 0).metric("accuracy") is None
    with pytest.raises(ValueError):
        nothing_above.metric("mse")


def test_midpoints_span_probabilities():
    assert bucket_midpoints([0.2, 0.5, 0.8]) == pytest.approx([0.1, 0.35, 0.65, 0.9])


# -- the profile's calibration -----------------------------------------------------------------

def calibrated(n: int, seed: int, a: float = 1.5, b: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of a perfectly calibrated model: y ~ Bernoulli(score)."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(a, b, n)
    return scores, rng.random(n) < scores


def binary_profile(scores: np.ndarray, labels: np.ndarray | None, bins: int = 20, **kwargs) -> Profile:
    predicted = np.where(scores > 0.5, 1, 0)
    prediction = prediction_profile(
        "classification", "model", predicted, bins, classes=[0, 1], scores=scores,
        score_meaning="probability of class 1", positive_class=1,
        labels=None if labels is None else labels.astype(int), **kwargs,
    )
    feature = numeric_distribution("x", scores, bins)
    return Profile(target="y", rows=len(scores), bins=bins, features=[feature], prediction=prediction)


def test_profile_puts_the_threshold_among_the_score_edges_and_records_calibration():
    scores, labels = calibrated(20_000, seed=1)
    profile = binary_profile(scores, labels)
    score, calibration = profile.prediction.score, profile.prediction.calibration
    assert 0.5 in score.edges and calibration is not None and calibration.threshold == 0.5
    assert len(calibration.mean_scores) == len(calibration.positives) == len(score.counts)
    above = scores > 0.5
    assert calibration.expected_accuracy == pytest.approx(np.where(above, scores, 1 - scores).mean())
    assert calibration.realised_accuracy == pytest.approx((above == labels).mean())
    assert sum(calibration.positives) == labels.sum() and calibration.rows == 20_000
    # Every bucket's mean score lies inside its bucket, wholly on one side of the threshold.
    edges = [0.0, *score.edges, 1.0]
    for i, mean in enumerate(calibration.mean_scores):
        assert mean is None or edges[i] <= mean <= edges[i + 1]
    assert Profile.from_json(profile.to_json()) == profile


def test_a_decision_threshold_other_than_one_half():
    scores, labels = calibrated(5000, seed=2)
    calibration = binary_profile(scores, labels, threshold=0.3).prediction.calibration
    assert calibration.threshold == 0.3
    assert calibration.realised_accuracy == pytest.approx(((scores > 0.3) == labels).mean())


def test_no_calibration_without_labels_or_with_labels_outside_the_classes():
    scores, labels = calibrated(1000, seed=3)
    assert binary_profile(scores, None).prediction.calibration is None
    assert 0.5 in binary_profile(scores, None).prediction.score.edges
    foreign = prediction_profile("classification", "model", np.where(scores > 0.5, 1, 0), classes=[0, 1], scores=scores,
                                 positive_class=1, labels=np.where(labels, "yes", "no"))
    assert foreign.calibration is None
    multiclass = prediction_profile("classification", "model", [0, 1, 2], classes=[0, 1, 2], scores=np.array([0.9, 0.8, 0.7]),
                                    labels=[0, 1, 2])
    assert multiclass.calibration is None and multiclass.positive_class is None


def test_inconsistent_calibration_is_rejected():
    scores, labels = calibrated(2000, seed=4)
    document = json.loads(binary_profile(scores, labels).to_json())
    bad_threshold = json.loads(json.dumps(document))
    bad_threshold["prediction"]["calibration"]["threshold"] = 0.55
    short = json.loads(json.dumps(document))
    short["prediction"]["calibration"]["meanScores"].pop()
    short["prediction"]["calibration"]["positives"].pop()
    too_many = json.loads(json.dumps(document))
    too_many["prediction"]["calibration"]["positives"][0] = document["prediction"]["score"]["counts"][0] + 1
    for broken in (bad_threshold, short, too_many):
        with pytest.raises(ValidationError):
            Profile.model_validate(broken)
    older = json.loads(json.dumps(document))
    del older["prediction"]["calibration"]
    assert Profile.model_validate(older).prediction.calibration is None  # formatVersion 1 without it still reads


# -- the estimate against simulated calibrated scores --------------------------------------------

def histogram(scores: np.ndarray, edges) -> np.ndarray:
    return np.bincount(np.searchsorted(np.asarray(edges), scores, side="left"), minlength=len(edges) + 1)


@pytest.mark.parametrize("a, b", [(1.5, 1.5), (4.0, 1.5), (1.2, 5.0), (0.6, 0.6)])
def test_estimate_matches_a_direct_computation_under_covariate_shift(a, b):
    """Reference scores from Beta(1.5, 1.5); the window's from another Beta (the score mix moved,
    p(y | score) did not). The histogram estimate is within 0.01 of the direct per-row CBPE
    computation and within 0.02 of what the window's labels give (200 000 rows, so that even
    precision over the few rows predicted positive under Beta(1.2, 5) has little sampling noise)."""
    ref_scores, ref_labels = calibrated(50_000, seed=10)
    calibration = ScoreCalibration.from_profile(binary_profile(ref_scores, ref_labels))
    scores, labels = calibrated(200_000, seed=11, a=a, b=b)
    estimate = calibration.estimate(histogram(scores, calibration.edges))
    above = scores > 0.5
    direct = Confusion(tp=scores[above].sum(), fp=(1 - scores[above]).sum(), fn=scores[~above].sum(), tn=(1 - scores[~above]).sum())
    truth = Confusion(tp=(above & labels).sum(), fp=(above & ~labels).sum(), fn=(~above & labels).sum(), tn=(~above & ~labels).sum())
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert estimate.metric(metric) == pytest.approx(direct.metric(metric), abs=0.01), metric
        assert estimate.metric(metric) == pytest.approx(truth.metric(metric), abs=0.02), metric


def test_calibration_on_the_reference_rows():
    scores, labels = calibrated(20_000, seed=5)
    calibration = ScoreCalibration.from_profile(binary_profile(scores, labels))
    for metric in ("accuracy", "precision", "recall", "f1", "negative predictive value"):
        expected, realised = calibration.on_reference(metric)
        assert abs(expected - realised) < 0.02, metric
    assert [gap.metric for gap in calibration.gaps("recall")] == ["recall", "precision", "negative predictive value"]
    assert calibration.refusals("f1", 0.02) == []
    # The bucket means reproduce the per-row expected accuracy exactly.
    profile = binary_profile(scores, labels)
    assert calibration.on_reference("accuracy") == pytest.approx(
        (profile.prediction.calibration.expected_accuracy, profile.prediction.calibration.realised_accuracy))


def test_an_empty_reference_bucket_uses_its_midpoint():
    """Quantile edges 0.1, 0.2, 0.8 plus the threshold 0.5: the bucket (0.2, 0.5] is empty."""
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    profile = binary_profile(scores, np.array([False, False, True, True]), bins=4)
    document = json.loads(profile.to_json())
    assert document["prediction"]["score"]["edges"] == [0.1, 0.2, 0.5, 0.8]
    assert document["prediction"]["calibration"]["meanScores"] == [0.1, 0.2, None, 0.8, 0.9]
    calibration = ScoreCalibration.from_profile(profile)
    assert calibration.representative == pytest.approx([0.1, 0.2, 0.35, 0.8, 0.9])
    assert calibration.above.tolist() == [False, False, False, True, True]


def test_live_buckets_must_be_the_profile_edges():
    scores, labels = calibrated(2000, seed=6)
    calibration = ScoreCalibration.from_profile(binary_profile(scores, labels))
    calibration.check_edges(np.array([*calibration.edges, np.inf]))
    with pytest.raises(EdgeMismatch, match="not the profile's score edges"):
        calibration.check_edges(np.array([0.25, 0.5, 0.75, np.inf]))


# -- the judge ----------------------------------------------------------------------------------

def spec(*performance: dict, min_samples: int = 1000) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate(
        {"targetRef": {"name": "m"}, "reference": PROFILE_REF, "minSamples": min_samples, "performance": list(performance)}
    )


def window(scores: np.ndarray, edges) -> BucketMatrix:
    le = [*edges, np.inf]
    return BucketMatrix.from_samples(["prediction"] * len(le), le, np.cumsum(histogram(scores, edges)))


def observe(profile: Profile | None, current: BucketMatrix | None, failures=None) -> Observations:
    reference = reference_from_profile(profile) if profile is not None else None
    return Observations(current=TrackWindow(prediction=current), reference=reference, failures=failures or {})


@pytest.fixture(scope="module")
def good_profile() -> Profile:
    scores, labels = calibrated(20_000, seed=7)
    return binary_profile(scores, labels)


def results(spec_: DriftPolicySpec, observations: Observations) -> dict:
    return {r.check: r for r in judge(spec_, observations, NOW).evaluation.results}


def test_judge_passes_and_fails_on_the_estimate(good_profile):
    scores, labels = calibrated(5000, seed=8, a=3.0, b=1.2)
    edges = good_profile.prediction.score.edges
    truth = ((scores > 0.5) == labels).mean()
    checks = results(
        spec({"metric": "estimated_accuracy", "min": 0.5}, {"metric": "estimated_precision", "min": 0.99},
             {"metric": "estimated_recall", "max": 0.5}, {"metric": "estimated_f1", "min": 0.5}),
        observe(good_profile, window(scores, edges)),
    )
    accuracy = checks["performance/estimated_accuracy"]
    assert accuracy.verdict is Verdict.PASS and accuracy.samples == 5000
    assert accuracy.value == pytest.approx(truth, abs=0.02)
    assert checks["performance/estimated_precision"].verdict is Verdict.FAIL
    assert checks["performance/estimated_recall"].verdict is Verdict.FAIL
    assert checks["performance/estimated_f1"].verdict is Verdict.PASS


def test_too_few_predictions_or_none_is_insufficient_data_never_fail(good_profile):
    scores, _ = calibrated(300, seed=9)
    edges = good_profile.prediction.score.edges
    check = {"metric": "estimated_accuracy", "min": 0.99}
    few = results(spec(check), observe(good_profile, window(scores, edges)))["performance/estimated_accuracy"]
    assert few.verdict is Verdict.INSUFFICIENT_DATA and few.samples == 300 and "need 1000" in few.message
    for empty in (None, BucketMatrix.empty()):
        none = results(spec(check), observe(good_profile, empty))["performance/estimated_accuracy"]
        assert none.verdict is Verdict.INSUFFICIENT_DATA


def test_an_uncalibrated_model_is_refused_naming_the_numbers():
    scores, labels = calibrated(20_000, seed=12)
    overconfident = 1 / (1 + np.exp(-3 * np.log(scores / (1 - scores))))  # the same decisions, logits tripled
    profile = binary_profile(overconfident, labels)
    live = window(overconfident[:5000], profile.prediction.score.edges)
    refused = results(spec({"metric": "estimated_accuracy", "min": 0.5}), observe(profile, live))["performance/estimated_accuracy"]
    calibration = profile.prediction.calibration
    assert refused.verdict is Verdict.ERROR and refused.value is None
    assert "not calibrated enough" in refused.message and "maxCalibrationError 0.02" in refused.message
    assert f"{calibration.expected_accuracy:.4f}" in refused.message and f"{calibration.realised_accuracy:.4f}" in refused.message
    # A wider tolerance accepts the same profile.
    widest = max(gap.difference for gap in ScoreCalibration.from_profile(profile).gaps("accuracy"))
    lenient = {"metric": "estimated_accuracy", "min": 0.5, "maxCalibrationError": min(widest + 0.01, 1.0)}
    assert results(spec(lenient), observe(profile, live))["performance/estimated_accuracy"].verdict is Verdict.PASS


def test_a_prior_shifted_model_is_refused_though_its_reference_accuracy_agrees():
    """Scores that all overstate p(positive) by 0.1 promise nearly the right accuracy on the
    reference (the errors above and below the threshold cancel), yet a window whose rows mostly
    sit above the threshold gets an accuracy estimate 0.10 too high: comparing accuracy alone
    would accept the model, so each side of the threshold is checked too."""
    rng = np.random.default_rng(13)

    def prior_shifted(low: float, high: float, n: int) -> tuple[np.ndarray, np.ndarray]:
        truth = rng.uniform(low, high, n)
        return truth + 0.1, rng.random(n) < truth  # every score 0.1 too high

    scores, labels = prior_shifted(0.0, 0.9, 40_000)
    profile = binary_profile(scores, labels)
    calibration = ScoreCalibration.from_profile(profile)
    expected, realised = calibration.on_reference("accuracy")
    assert abs(expected - realised) < 0.02  # accuracy alone would not notice (0.7275 promised, 0.7139 realised)
    shifted_scores, shifted_labels = prior_shifted(0.4, 0.9, 40_000)
    estimate = calibration.estimate(histogram(shifted_scores, calibration.edges)).metric("accuracy")
    assert estimate - ((shifted_scores > 0.5) == shifted_labels).mean() > 0.08
    live = window(shifted_scores[:5000], profile.prediction.score.edges)
    for metric in ("estimated_accuracy", "estimated_recall"):
        refused = results(spec({"metric": metric, "min": 0.5}), observe(profile, live))[f"performance/{metric}"]
        assert refused.verdict is Verdict.ERROR and "precision 0.75" in refused.message, refused.message


@pytest.mark.parametrize("case, reason", [
    ("no profile", "reference profile was not provided"),
    ("older profile", "no calibration"),
    ("no scores", "no scores"),
    ("multiclass", "3 classes"),
    ("regression", "regression model"),
])
def test_a_profile_that_cannot_back_an_estimate_is_an_error(case, reason):
    scores, labels = calibrated(2000, seed=14)
    if case == "no profile":
        profile = None
    elif case == "older profile":
        profile = binary_profile(scores, None)
    elif case == "no scores":
        prediction = prediction_profile("classification", "target", labels.astype(int), classes=[0, 1])
        profile = Profile(target="y", rows=2000, bins=20, features=[], prediction=prediction)
    elif case == "multiclass":
        prediction = prediction_profile("classification", "model", [0, 1, 2] * 10, classes=[0, 1, 2],
                                        scores=np.linspace(0.4, 1.0, 30), labels=[0, 1, 2] * 10)
        profile = Profile(target="y", rows=30, bins=20, features=[], prediction=prediction)
    else:
        prediction = prediction_profile("regression", "model", scores)
        profile = Profile(target="y", rows=2000, bins=20, features=[], prediction=prediction)
    live = window(scores, [0.25, 0.5, 0.75])
    result = results(spec({"metric": "estimated_recall", "min": 0.5}), observe(profile, live))["performance/estimated_recall"]
    assert result.verdict is Verdict.ERROR and reason in result.message, result.message
    if profile is not None and case != "no profile":
        with pytest.raises(Uncalibrated):
            ScoreCalibration.from_profile(profile)


def test_other_buckets_or_a_failed_fetch_are_errors(good_profile):
    scores, _ = calibrated(5000, seed=15)
    check = {"metric": "estimated_f1", "min": 0.5}
    mismatch = results(spec(check), observe(good_profile, window(scores, [0.25, 0.5, 0.75])))["performance/estimated_f1"]
    assert mismatch.verdict is Verdict.ERROR and "not the profile's score edges" in mismatch.message
    failed = results(spec(check), observe(good_profile, None, {PREDICTION: "Unreachable: connection refused"}))
    assert failed["performance/estimated_f1"].verdict is Verdict.ERROR
    assert failed["performance/estimated_f1"].message == "Unreachable: connection refused"


# -- the API and the collector -------------------------------------------------------------------

def test_estimated_metrics_need_a_profile_reference_and_take_a_tolerance():
    with pytest.raises(ValidationError, match="profileRef is required"):
        DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "performance": [{"metric": "estimated_f1", "min": 0.5}]})
    with pytest.raises(ValidationError, match="profileRef is required"):
        DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "reference": {"track": "canary"},
                                        "performance": [{"metric": "estimated_f1", "min": 0.5}]})
    for bad in ({"metric": "accuracy", "min": 0.5, "maxCalibrationError": 0.1},
                {"metric": "estimated_accuracy", "min": 0.5, "maxCalibrationError": 0},
                {"metric": "estimated_accuracy", "min": 0.5, "maxCalibrationError": 1.5},
                {"metric": "estimated_accuracy", "min": 1.5},
                {"metric": "estimated_precision", "min": 0.5, "class": "1"}):
        with pytest.raises(ValidationError):
            spec(bad)
    checks = spec({"metric": "estimated_accuracy", "min": 0.8}, {"metric": "estimated_f1", "min": 0.5, "maxCalibrationError": 0.05})
    assert [c.calibration_tolerance for c in checks.performance] == [0.02, 0.05]


def test_the_score_histogram_is_fetched_and_the_profile_provided_without_drift(good_profile):
    policy = spec({"metric": "estimated_accuracy", "min": 0.5})
    planned = plan_queries(policy, Target("m", versions={"stable": "3"}))
    series = 'modelwarden_prediction_value_bucket{model="m",track="stable",version="3"}'
    assert planned[PREDICTION].startswith(f"sum by (le) (((({series} - {series} offset 30m)")
    labelled = spec({"metric": "accuracy", "min": 0.5})
    assert PREDICTION not in plan_queries(labelled, Target("m"))

    scores, _ = calibrated(5000, seed=16)
    edges = good_profile.prediction.score.edges
    cumulative = np.cumsum(histogram(scores, edges)).astype(float)

    class Stub:
        def query(self, promql: str, at=None) -> InstantVector:
            if "prediction_value_bucket" not in promql:
                raise NoData(promql)
            le = [repr(float(e)) for e in edges] + ["+Inf"]
            return InstantVector([{"le": v} for v in le], cumulative)

    profile = reference_from_profile(good_profile)
    observations, _, _ = collect(policy, Target("m"), Stub(), NOW, profile)
    assert observations.reference is profile and PREDICTION not in observations.failures
    result = judge(policy, observations, NOW).evaluation.results[0]
    assert result.verdict is Verdict.PASS and result.samples == 5000
    # Without the profile (a profileRef the caller could not load) the check is an Error, not a verdict.
    missing, _, _ = collect(policy, Target("m"), Stub(), NOW, None)
    assert judge(policy, missing, NOW).evaluation.results[0].verdict is Verdict.ERROR


def test_the_profile_command_warns_when_the_checks_would_refuse():
    from modelwarden.commands.profile import calibration_warning

    scores, labels = calibrated(20_000, seed=17)
    assert calibration_warning(binary_profile(scores, labels)) is None
    overconfident = 1 / (1 + np.exp(-3 * np.log(scores / (1 - scores))))
    warning = calibration_warning(binary_profile(overconfident, labels))
    assert "not calibrated within 0.02" in warning and "accuracy" in warning and "precision" in warning
    assert "no calibration recorded" in calibration_warning(binary_profile(scores, None))
    regression = prediction_profile("regression", "model", scores)
    assert calibration_warning(Profile(target="y", rows=20_000, bins=20, features=[], prediction=regression)) is None
