import decimal
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelwarden.sandbox import datagen
from modelwarden.contract.metrics import format_le
from modelwarden.serving.monitor import ModelMonitor
from modelwarden.contract.profile import Profile
from modelwarden.serving.profile import categorical_distribution, numeric_distribution, prediction_profile


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """Every exposed sample, parsed back from the text format like Prometheus would."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed, name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in parsed.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} matches"
    return matches[0]


def make_monitor(profile: Profile, track: str = "stable") -> tuple[ModelMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    return ModelMonitor("fraud", "7", track, profile, registry=registry), registry


def test_feature_buckets_equal_searchsorted_per_feature(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    x, _ = datagen.classification(500, seed=3, drift=datagen.Drift(shift={"amount": 2.0}))
    edges0 = np.array(classifier_profile.features[0].edges)
    x[:5, 0] = edges0[:5]  # values exactly on an edge belong to that edge's bucket (le is inclusive)
    for start in range(0, 500, 37):  # uneven batches, including a last partial one
        monitor.record_prediction(x[start : start + 37], np.zeros(len(x[start : start + 37]), dtype=int))
    parsed = samples(registry)
    for j, feature in enumerate(classifier_profile.features):
        edges = np.array(feature.edges)
        expected = np.cumsum(np.bincount(np.searchsorted(edges, x[:, j], side="left"), minlength=edges.size + 1))
        got = [value(parsed, "modelwarden_feature_value_bucket", feature=feature.name, le=format_le(e)) for e in edges]
        got.append(value(parsed, "modelwarden_feature_value_bucket", feature=feature.name, le="+Inf"))
        assert got == expected.tolist()
        assert value(parsed, "modelwarden_feature_value_sum", feature=feature.name) == pytest.approx(x[:, j].sum())
        assert value(parsed, "modelwarden_feature_value_count", feature=feature.name) == 500
    assert value(parsed, "modelwarden_predictions_total", model="fraud", version="7", track="stable") == 500


def test_le_labels_round_trip_to_profile_edges(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    les = {
        labels["le"]
        for (name, ls), _ in samples(registry).items()
        if name == "modelwarden_feature_value_bucket" and (labels := dict(ls))["feature"] == "merchant_risk"
    }
    edges = classifier_profile.features[-1].edges
    assert {float(le) for le in les} == {*edges, math.inf}
    assert les == {repr(e) for e in edges} | {"+Inf"}


def test_negative_edges_keep_count_and_sum():
    profile = Profile(
        target="y",
        rows=4,
        bins=2,
        features=[numeric_distribution("neg", [-3.0, -2.0, -1.0, -0.5], bins=2)],
        prediction=prediction_profile("regression", "target", [1.0, 2.0, 3.0, 4.0], bins=2),
    )
    monitor, registry = make_monitor(profile)
    monitor.record_prediction([[-2.5], [-0.1]], [1.0, 2.0])
    parsed = samples(registry)
    assert value(parsed, "modelwarden_feature_value_count", feature="neg") == 2
    assert value(parsed, "modelwarden_feature_value_sum", feature="neg") == pytest.approx(-2.6)


def test_classifier_scores_classes_and_outliers(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    means = np.array([f.mean for f in classifier_profile.features])
    stds = np.array([f.std for f in classifier_profile.features])
    rows = np.tile(means, (4, 1))
    rows[1, 2] = means[2] + 3.5 * stds[2]  # feature beyond |z| = 3
    rows[2, 0] = means[0] - 2.5 * stds[0]  # within the threshold
    scores = np.array([0.1, 0.6, 0.7, 0.9])
    monitor.record_prediction(rows, np.array([0, 1, 1, 1]), latency=0.003, scores=scores)
    parsed = samples(registry)
    assert value(parsed, "modelwarden_prediction_outliers_total") == 1
    assert value(parsed, "modelwarden_predicted_class_total", **{"class": "0"}) == 1
    assert value(parsed, "modelwarden_predicted_class_total", **{"class": "1"}) == 3
    assert value(parsed, "modelwarden_prediction_value_count") == 4
    assert value(parsed, "modelwarden_prediction_value_sum") == pytest.approx(scores.sum())
    assert value(parsed, "modelwarden_inference_latency_seconds_count") == 1
    assert value(parsed, "modelwarden_inference_latency_seconds_bucket", le="0.0025") == 0
    assert value(parsed, "modelwarden_inference_latency_seconds_bucket", le="0.005") == 1


def test_feedback_confusion_counts_canonicalise_labels(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    monitor.record_feedback([1, 1, 0, "0"], [1.0, "0", 0, 1])
    monitor.record_feedback(1, 1)
    parsed = samples(registry)
    confusion = {(p, a): value(parsed, "modelwarden_feedback_total", predicted=p, actual=a) for p in "01" for a in "01"}
    assert confusion == {("1", "1"): 2, ("1", "0"): 1, ("0", "0"): 1, ("0", "1"): 1}
    with pytest.raises(ValueError):
        monitor.record_feedback([1, 0], [1])


def test_regression_output_beyond_z_score_is_an_outlier(regressor_profile):
    monitor, registry = make_monitor(regressor_profile)
    prediction = regressor_profile.prediction
    rows = np.tile([f.mean for f in regressor_profile.features], (3, 1))
    outputs = [prediction.mean, prediction.mean + 3.2 * prediction.std, prediction.mean - 2.9 * prediction.std]
    monitor.record_prediction(rows, outputs)
    parsed = samples(registry)
    assert value(parsed, "modelwarden_prediction_outliers_total") == 1
    assert value(parsed, "modelwarden_prediction_value_sum") == pytest.approx(sum(outputs))


def test_regression_feedback_sums(regressor_profile):
    monitor, registry = make_monitor(regressor_profile)
    monitor.record_feedback([10.0, 20.0, 30.0], [12.0, 19.0, 30.0])
    parsed = samples(registry)
    assert value(parsed, "modelwarden_feedback_squared_error_sum") == 5.0
    assert value(parsed, "modelwarden_feedback_absolute_error_sum") == 3.0
    assert value(parsed, "modelwarden_feedback_observations_total") == 3
    assert value(parsed, "modelwarden_feedback_fourth_power_error_sum") == 2.0**4 + 1.0**4
    assert not any(name == "modelwarden_feedback_total" for name, _ in parsed)


def test_errors_by_reason_start_at_zero(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    monitor.record_error("non_finite")
    monitor.record_error("non_finite")
    monitor.record_error("something_new")
    parsed = samples(registry)
    assert value(parsed, "modelwarden_prediction_errors_total", reason="non_finite") == 2
    assert value(parsed, "modelwarden_prediction_errors_total", reason="malformed_json") == 0
    assert value(parsed, "modelwarden_prediction_errors_total", reason="something_new") == 1


def test_non_finite_values_are_not_bucketed(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    rows = np.tile([f.mean for f in classifier_profile.features], (2, 1))
    rows[0, 0] = np.nan
    monitor.record_prediction(rows, [0, 0])
    parsed = samples(registry)
    assert value(parsed, "modelwarden_feature_value_count", feature="amount") == 1
    assert value(parsed, "modelwarden_feature_value_count", feature="balance") == 2


def test_categorical_features_count_levels_and_unseen():
    colours = ["blue", "red", "red"]
    profile = Profile(
        target="y",
        rows=3,
        bins=2,
        features=[numeric_distribution("size", [1.0, 2.0, 3.0], bins=2), categorical_distribution("colour", colours)],
        prediction=prediction_profile("classification", "target", [0, 1, 1]),
    )
    monitor, registry = make_monitor(profile)
    monitor.record_prediction(
        [{"size": 1.0, "colour": "red"}, [2.0, "green"], [3.0, "blue"], [3.0, "red"]], ["0", "1", "1", "1"]
    )
    parsed = samples(registry)
    buckets = [
        value(parsed, "modelwarden_feature_value_bucket", feature="colour", le=le) for le in ("0.0", "1.0", "+Inf")
    ]
    assert buckets == [1, 3, 4]  # blue, +red (2), +green (unseen)


def test_one_monitor_per_registry(classifier_profile):
    registry = CollectorRegistry()
    ModelMonitor("a", "1", "stable", classifier_profile, registry=registry)
    with pytest.raises(ValueError):
        ModelMonitor("a", "2", "canary", classifier_profile, registry=registry)


def test_buffering_never_changes_what_is_exported(classifier_profile):
    """Rows recorded one by one with frequent flushes (and a reused caller buffer) equal one batch."""
    x, _ = datagen.classification(40, seed=8, drift=datagen.Drift(shift={"balance": 3.5}))
    x[3, 1] = classifier_profile.features[1].edges[4]
    output = np.arange(40) % 2
    scores = np.linspace(0.0, 1.0, 40)
    registry_a, registry_b = CollectorRegistry(), CollectorRegistry()
    one_by_one = ModelMonitor("fraud", "7", "stable", classifier_profile, registry=registry_a, flush_rows=7)
    batched = ModelMonitor("fraud", "7", "stable", classifier_profile, registry=registry_b)
    reused = np.empty((1, x.shape[1]))
    for i in range(40):
        reused[:] = x[i]
        one_by_one.record_prediction(reused, output[i : i + 1], scores=scores[i : i + 1])
    reused[:] = np.nan  # a caller reusing its buffer must not change what was recorded
    batched.record_prediction(x, output, scores=scores)
    a, b = samples(registry_a), samples(registry_b)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-12), key
    assert value(a, "modelwarden_prediction_outliers_total") > 0


def test_mismatched_output_is_rejected_at_record_time(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    rows = np.tile([f.mean for f in classifier_profile.features], (3, 1))
    with pytest.raises(ValueError, match="3 rows but 2"):
        monitor.record_prediction(rows, [0, 1])
    assert value(samples(registry), "modelwarden_predictions_total") == 0


def test_predicted_classes_are_tallied_whatever_the_label_types(classifier_profile):
    """Labels are tallied by sorting when they can be ordered, by hashing when they cannot."""
    monitor, registry = make_monitor(classifier_profile)
    rows = np.tile([f.mean for f in classifier_profile.features], (3, 1))
    monitor.record_prediction(rows, np.array([1, 0, 1]))
    monitor.record_prediction(rows, ["1", "1", "0"])  # strings of the same classes
    parsed = samples(registry)  # a scrape tallies what is pending
    assert value(parsed, "modelwarden_predicted_class_total", **{"class": "1"}) == 4
    assert value(parsed, "modelwarden_predicted_class_total", **{"class": "0"}) == 2
    monitor.record_prediction(rows, np.array([None, 1, 1], dtype=object))  # unorderable: hashed instead
    parsed = samples(registry)
    assert value(parsed, "modelwarden_predicted_class_total", **{"class": "1"}) == 6
    assert value(parsed, "modelwarden_predicted_class_total", **{"class": "0"}) == 2
    assert value(parsed, "modelwarden_predictions_total") == 9


@pytest.mark.parametrize("rows", [0, 1, 7, 8, 9, 2039, 2040, 2041, 5000])
def test_branch_free_counts_equal_searchsorted(rows):
    """Every lane and chunk boundary: a byte lane overflowing would show up above 2040 rows."""
    from modelwarden.serving.buckets import count_at_or_below

    rng = np.random.default_rng(rows)
    edges = np.sort(rng.normal(size=(3, 6)), axis=1)
    edges[2, 4:] = np.inf  # a shorter column padded with +Inf
    values = rng.normal(size=(3, rows))
    values[:, : min(rows, 6)] = edges[:, : min(rows, 6)]  # values exactly on an edge count as <= it
    if rows > 10:
        values[0, 10] = np.nan
    counts = count_at_or_below(values, edges)
    for c in range(3):
        finite_or_inf = values[c][~np.isnan(values[c])]
        expected = np.searchsorted(np.sort(finite_or_inf), edges[c], side="right")
        np.testing.assert_array_equal(counts[c], expected)


def test_non_finite_values_are_not_counted(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    rows = np.tile([f.mean for f in classifier_profile.features], (4, 1))
    rows[1, 0], rows[2, 0], rows[3, 0] = np.nan, np.inf, -np.inf
    monitor.record_prediction(rows, [0, 1, 0, 1])
    parsed = samples(registry)
    name = classifier_profile.features[0].name
    assert value(parsed, "modelwarden_feature_value_count", feature=name) == 1
    assert value(parsed, "modelwarden_feature_value_bucket", feature=name, le="+Inf") == 1
    assert value(parsed, "modelwarden_feature_value_sum", feature=name) == pytest.approx(classifier_profile.features[0].mean)
    other = classifier_profile.features[1].name
    assert value(parsed, "modelwarden_feature_value_count", feature=other) == 4
    assert value(parsed, "modelwarden_predictions_total") == 4


def _one_feature_classifier(classes):
    return Profile(
        target="y",
        rows=4,
        bins=2,
        features=[numeric_distribution("a", [1.0, 2.0, 3.0, 4.0], bins=2)],
        prediction=prediction_profile("classification", "model", classes, classes=classes),
    )


def test_class_keys_do_not_depend_on_what_else_is_pending():
    """Label arrays of different dtypes are tallied apart: joined, 1.0 would become "1.0" next to a string."""
    monitor, registry = make_monitor(_one_feature_classifier([0, 1]))
    monitor.record_prediction([[1.0]] * 3, [0, 1, 0])
    monitor.record_prediction([[1.0]], ["x"])
    monitor.record_prediction([[1.0]], [1.0])
    monitor.record_prediction([[1.0], [2.0]], np.array([True, False]))
    monitor.record_prediction(np.empty((0, 1)), [])  # an empty request: float64 labels, nothing to count
    parsed = samples(registry)
    counts = {c: value(parsed, "modelwarden_predicted_class_total", **{"class": c}) for c in ("0", "1", "x", "true", "false")}
    assert counts == {"0": 2, "1": 2, "x": 1, "true": 1, "false": 1}
    assert value(parsed, "modelwarden_predictions_total") == 7


@pytest.mark.parametrize(
    "labels, expected",
    [
        (np.array([0, 1, 1], dtype=np.uint64), {"0": 1, "1": 2}),  # bincount refuses uint64 on numpy 1.x
        (np.array([5000, -3, 5000]), {"5000": 2, "-3": 1}),  # outside the bincount range: sorted instead
        (np.array([decimal.Decimal(1), decimal.Decimal("NaN"), decimal.Decimal(1)], dtype=object), {"1": 2, "NaN": 1}),
    ],
)
def test_every_label_type_a_scrape_can_meet_is_tallied(labels, expected):
    monitor, registry = make_monitor(_one_feature_classifier([0, 1]))
    monitor.record_prediction([[1.0]] * len(labels), labels)
    monitor.record_prediction([[1.0]], np.array(["2020-01-01"], dtype="M8[D]"))  # another dtype pending beside it
    parsed = samples(registry)
    for label, n in expected.items():
        assert value(parsed, "modelwarden_predicted_class_total", **{"class": label}) == n
    assert value(parsed, "modelwarden_predicted_class_total", **{"class": "2020-01-01"}) == 1


def test_non_finite_latency_is_not_observed(classifier_profile):
    monitor, registry = make_monitor(classifier_profile)
    rows = np.tile([f.mean for f in classifier_profile.features], (1, 1))
    for latency in (0.002, float("nan"), float("inf"), 0.004):
        monitor.record_prediction(rows, [1], latency=latency)
    parsed = samples(registry)
    assert value(parsed, "modelwarden_inference_latency_seconds_count") == 2
    assert value(parsed, "modelwarden_inference_latency_seconds_sum") == pytest.approx(0.006)
    assert value(parsed, "modelwarden_predictions_total") == 4


def test_feedback_of_another_track_gets_all_its_series_at_zero_for_one_scrape_first(classifier_profile):
    """increase() takes a series' first sample as its start: counts in it would never be seen."""
    monitor, registry = make_monitor(classifier_profile, track="stable")
    classes = classifier_profile.classes
    monitor.record_feedback([classes[0], classes[1]], [classes[0], classes[0]], version="8", track="canary")
    first = samples(registry)
    canary = {k: v for k, v in first.items() if k[0] == "modelwarden_feedback_total" and ("track", "canary") in k[1]}
    assert len(canary) == len(classes) ** 2 and set(canary.values()) == {0.0}
    second = samples(registry)
    assert value(second, "modelwarden_feedback_total", track="canary", version="8", predicted=classes[0], actual=classes[0]) == 1
    assert value(second, "modelwarden_feedback_total", track="canary", version="8", predicted=classes[1], actual=classes[0]) == 1
    # This server's own series were exported from the start, so its feedback shows at once.
    monitor.record_feedback(classes[0], classes[0])
    assert value(samples(registry), "modelwarden_feedback_total", track="stable", version="7",
                 predicted=classes[0], actual=classes[0]) == 1
    assert monitor.knows_feedback_of("8", "canary") and monitor.feedback_label_sets() == 1


def test_regression_feedback_of_another_version_also_waits_one_scrape(regressor_profile):
    monitor, registry = make_monitor(regressor_profile)
    monitor.record_feedback([1.0, 2.0], [0.0, 0.0], version="6", track="stable")
    first = samples(registry)
    for name in ("squared_error_sum", "absolute_error_sum", "observations_total", "fourth_power_error_sum"):
        assert value(first, f"modelwarden_feedback_{name}", version="6") == 0, name  # every series at 0 first
    second = samples(registry)
    assert value(second, "modelwarden_feedback_squared_error_sum", version="6") == 5.0
    assert value(second, "modelwarden_feedback_fourth_power_error_sum", version="6") == 17.0
    assert value(samples(registry), "modelwarden_feedback_observations_total", version="6") == 2
