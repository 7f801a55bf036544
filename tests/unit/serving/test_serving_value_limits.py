"""Values that would poison the exported sums, strict V2 tensors, the byte-bounded feedback cache
and the client/server error split (issue 14, items 5 and 7): pure parsing and bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelwarden.contract.profile import Distribution, Profile
from modelwarden.serving.limits import MAX_MAGNITUDE, ValueLimits, plausible_range
from modelwarden.serving.monitor import ModelMonitor
from modelwarden.serving.payload import FeatureSchema, PayloadError, RejectedValue, parse_feedback, parse_v1
from modelwarden.serving.profile import prediction_profile
from modelwarden.serving.service import FeedbackCache
from modelwarden.serving.v2 import parse_v2

AMOUNT = Distribution(name="amount", kind="numeric", edges=[10.0, 50.0, 100.0], counts=[1, 1, 1, 1], count=4,
                      mean=55.0, std=30.0)
COUNTRY = Distribution(name="country", kind="categorical", edges=[0.0, 1.0], counts=[2, 2, 0], count=4, levels=["0", "1"])


def regression_profile() -> Profile:
    prediction = prediction_profile("regression", "model", [1.0, 2.0, 3.0, 4.0], bins=4)
    return Profile(target="y", rows=4, bins=4, features=[AMOUNT, COUNTRY], prediction=prediction)


PROFILE = regression_profile()
SCHEMA = FeatureSchema.from_profile(PROFILE)  # default factor 1000


def test_plausible_range_widens_the_reference_span_by_the_factor():
    accepted = plausible_range(AMOUNT, 1000)
    # span 10..100, scale max(90, 100, 30) = 100: 10 - 100,000 .. 100 + 100,000
    assert (accepted.low, accepted.high) == (10 - 100_000, 100 + 100_000)
    assert plausible_range(COUNTRY, 1000).high == MAX_MAGNITUDE  # level codes: any number is an unseen level
    assert plausible_range(AMOUNT, 0).high == MAX_MAGNITUDE
    constant = Distribution(name="c", kind="numeric", edges=[0.0], counts=[4, 0], count=4, mean=0.0, std=0.0)
    assert plausible_range(constant, 10).high == 10.0  # scale 0 becomes 1


@pytest.mark.parametrize("value, reason, status", [
    (1e308, "out_of_range", 422),
    (-200_000.0, "out_of_range", 422),
    (float("nan"), "non_finite", 400),
    (10**400, "non_finite", 400),  # an integer too large for a float
])
def test_absurd_feature_values_are_rejected_naming_the_feature(value, reason, status):
    with pytest.raises(RejectedValue) as info:
        parse_v1({"instances": [[50.0, 1], [value, 0]]}, SCHEMA)
    assert (info.value.reason, info.value.status, info.value.input) == (reason, status, "features")
    if reason == "out_of_range":
        assert "row 1, feature 'amount'" in info.value.message and "--value-range-factor 1000" in info.value.message


def test_a_unit_change_still_passes_and_a_categorical_number_is_only_bounded_by_magnitude():
    """×1000 (grams for kilograms) must reach the histograms and show as drift, not be refused."""
    assert parse_v1({"instances": [[100_000.0, 1e50]]}, SCHEMA).tolist() == [[100_000.0, 1e50]]
    with pytest.raises(RejectedValue, match="feature 'country'.*overflow"):
        parse_v1({"instances": [[1.0, 1e71]]}, SCHEMA)


def test_factor_zero_keeps_only_the_magnitude_bound():
    schema = FeatureSchema.from_profile(PROFILE, range_factor=0)
    assert parse_v1({"instances": [[1e69, 0]]}, schema)[0, 0] == 1e69
    with pytest.raises(RejectedValue) as info:
        parse_v1({"instances": [[1e71, 0]]}, schema)
    assert info.value.reason == "out_of_range" and "overflow the exported sums" in info.value.message


def test_poisoned_regression_feedback_is_rejected_before_anything_is_counted():
    limits = ValueLimits.from_profile(PROFILE)
    with pytest.raises(RejectedValue) as info:
        parse_feedback({"predicted": 1e200, "actual": -1e200}, "regression", [], limits)
    assert (info.value.input, info.value.reason, info.value.status) == ("feedback", "out_of_range", 422)
    assert "feedback[0].actual" in info.value.message
    with pytest.raises(RejectedValue) as info:
        parse_feedback([{"predicted": 1, "actual": 2}, {"request_id": "r", "actual": [1, math.inf]}], "regression", [], limits)
    assert info.value.reason == "non_finite" and "feedback[1].actual" in info.value.message
    assert parse_feedback({"predicted": 2.5, "actual": 3000}, "regression", [], limits)[0].actual == 3000


# -- strict V2 ------------------------------------------------------------------------------------

V2_SCHEMA = FeatureSchema(("a", "b", "c"), frozenset(), text_input=False)


@pytest.mark.parametrize("tensor, fragment", [
    ({"name": "x", "datatype": "FP16", "shape": [1, 3], "data": [1, 1e10, 3]}, "'x' (FP16): value 10000000000.0 at position 1"),
    ({"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 1e39]}, "'x' (FP32)"),
    ({"name": "x", "datatype": "INT8", "shape": [1, 3], "data": [1, 1000, 3]}, "'x' (INT8): value 1000"),
    ({"name": "x", "datatype": "UINT8", "shape": [1, 3], "data": [-5, 1, 2]}, "'x' (UINT8): value -5"),
    ({"name": "x", "datatype": "INT64", "shape": [1, 3], "data": [2**63, 1, 2]}, "'x' (INT64)"),
    ({"name": "x", "datatype": "FP64", "shape": [2, 3], "data": [[1, 2], [3, 4, 5, 6]]}, "'x': row 0 has 2 values"),
    ({"name": "x", "datatype": "FP64", "shape": [2, 3], "data": [[1, 2, 3], 4]}, "'x': row 1 is not a list"),
    ({"name": "x", "datatype": "FP64", "shape": [3, 3], "data": [[1, 2, 3], [4, 5, 6]]}, "'x': 2 rows of data"),
    ({"name": "x", "datatype": "FP64", "shape": [1, 1, 3], "data": [1, 2, 3]}, "'x' has shape [1, 1, 3]"),
])
def test_v2_values_must_fit_the_datatype_and_data_the_shape(tensor, fragment):
    with pytest.raises(PayloadError) as info:
        parse_v2({"inputs": [tensor]}, V2_SCHEMA)
    assert info.value.status == 400 and fragment in info.value.message


def test_v2_named_tensors_are_checked_per_input():
    inputs = [{"name": "a", "datatype": "INT8", "shape": [2], "data": [1, 2]},
              {"name": "b", "datatype": "UINT8", "shape": [2, 1], "data": [[1], [-1]]},
              {"name": "c", "datatype": "FP64", "shape": [2], "data": [1, 2]}]
    with pytest.raises(PayloadError, match="'b' \\(UINT8\\): value -1"):
        parse_v2({"inputs": inputs}, V2_SCHEMA)


def test_v2_datatype_limits_are_inclusive():
    inputs = [{"name": "a", "datatype": "INT8", "shape": [2], "data": [-128, 127]},
              {"name": "b", "datatype": "UINT8", "shape": [2], "data": [0, 255]},
              {"name": "c", "datatype": "FP16", "shape": [2], "data": [-65504, 65504.0]}]
    assert parse_v2({"inputs": inputs}, V2_SCHEMA).tolist() == [[-128, 0, -65504], [127, 255, 65504]]


# -- feedback cache ---------------------------------------------------------------------------------


def test_feedback_cache_is_bounded_in_bytes_oldest_first_and_counts_evictions():
    rows = np.arange(1000, dtype=float)  # 8000 bytes + overhead per entry
    one = FeedbackCache.entry_bytes("r0", rows)
    cache = FeedbackCache(size=10_000, max_bytes=3 * one)
    for i in range(5):
        cache.put(f"r{i}", rows.copy())
    assert len(cache) == 3 and cache.evictions == 2 and cache.bytes == 3 * one
    assert cache.get("r0") is None and cache.get("r1") is None and cache.get("r4") == rows.tolist()
    cache.put("huge", np.zeros(10_000))  # larger than the whole budget: not kept, nothing else dropped
    assert cache.get("huge") is None and len(cache) == 3 and cache.evictions == 3
    for i in (2, 3, 4):
        cache.pop(f"r{i}")
    assert cache.bytes == 0 and len(cache) == 0


def test_feedback_cache_keeps_a_copy_of_views_and_counts_object_labels():
    base = np.zeros(100_000)
    cache = FeedbackCache(size=10, max_bytes=1 << 20)
    cache.put("view", base[:2])
    assert cache.bytes < 1000  # the view's base (800 kB) is not held
    labels = np.array(["fraud-" * 20] * 10, dtype=object)
    assert FeedbackCache.entry_bytes("r", labels) > labels.nbytes + 10 * 120


# -- monitor ------------------------------------------------------------------------------------------


def scraped(registry: CollectorRegistry, family: str) -> dict[tuple, float]:
    for metric in text_string_to_metric_families(generate_latest(registry).decode()):
        if metric.name == family:
            return {tuple(sorted((k, v) for k, v in s.labels.items() if k in ("reason", "input"))): s.value
                    for s in metric.samples}
    raise AssertionError(f"{family} not exported")


def test_monitor_refuses_feedback_that_would_make_the_sums_infinite():
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", "1", "stable", PROFILE, registry=registry)
    monitor.record_feedback([1.0], [3.0])
    with pytest.raises(ValueError, match="nothing was recorded"):
        monitor.record_feedback([1.0, 1e200], [2.0, -1e200])
    with pytest.raises(ValueError, match="nothing was recorded"):
        monitor.record_feedback([1e71], [-1e71])  # squares fine, but its fourth power would be +Inf
    sums = scraped(registry, "modelwarden_feedback_squared_error_sum")
    assert list(sums.values()) == [4.0]
    assert list(scraped(registry, "modelwarden_feedback_fourth_power_error_sum").values()) == [16.0]
    assert scraped(registry, "modelwarden_rejected_values")[(("input", "feedback"), ("reason", "out_of_range"))] == 2


def test_monitor_splits_client_and_server_errors():
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", "1", "stable", PROFILE, registry=registry)
    monitor.record_error("invalid_payload", status=400)
    monitor.record_error("method_not_allowed", status=405)
    monitor.record_error("model_error")  # no status: the reason decides
    monitor.record_error("timeout", status=504)  # a reason of the caller's own
    client = scraped(registry, "modelwarden_client_errors")
    server = scraped(registry, "modelwarden_server_errors")
    everything = scraped(registry, "modelwarden_prediction_errors")
    assert client[(("reason", "invalid_payload"),)] == 1 and client[(("reason", "method_not_allowed"),)] == 1
    assert sum(client.values()) == 2
    assert server == {(("reason", "model_error"),): 1, (("reason", "internal_error"),): 0, (("reason", "timeout"),): 1}
    assert (("reason", "method_not_allowed"),) not in everything  # the router's refusals predate no contract
    assert sum(everything.values()) == 3


def test_histograms_do_not_sum_values_beyond_the_magnitude_bound():
    registry = CollectorRegistry()
    monitor = ModelMonitor("m", "1", "stable", PROFILE, registry=registry)
    monitor.record_prediction([[1e308, 0], [1e308, 1], [20.0, 0]], [1.0, 2.0, 3.0])
    text = generate_latest(registry).decode()
    total = next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "modelwarden_feature_value_sum" and s.labels["feature"] == "amount")
    assert total == 20.0
