import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelwarden.serving.payload import FeatureSchema, PayloadError, parse_feedback, parse_json, parse_v1
from modelwarden.serving.v2 import parse_v2

SCHEMA = FeatureSchema(("a", "b", "c"), frozenset(), text_input=False)
TEXT_SCHEMA = FeatureSchema(("size", "colour"), frozenset({1}), text_input=True)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)
feature_names = st.sampled_from(["a", "b", "c", "d", "name", "datatype", "shape", "data", "inputs", "instances"])
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "c", "input", 3]),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "fp32", 1]),
        "shape": st.lists(st.integers(-1, 4), max_size=3) | json_values,
        "data": st.lists(json_scalars | st.lists(json_scalars, max_size=4), max_size=12) | json_values,
    }
)
v1_documents = st.fixed_dictionaries(
    {
        "instances": st.lists(
            st.lists(json_scalars, max_size=4) | st.dictionaries(feature_names, json_scalars), max_size=4
        )
        | json_values
    }
)
v2_documents = st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=4) | json_values}) | json_values


def check_parsed(parse, doc, schema):
    """Either a finite matrix of the schema's width or a PayloadError: nothing else may escape."""
    try:
        matrix = parse(doc, schema)
    except PayloadError as exc:
        assert exc.reason and exc.message and 400 <= exc.status < 500
        return
    assert matrix.ndim == 2 and matrix.shape[1] == schema.width and matrix.shape[0] >= 1
    if matrix.dtype != object:
        assert np.isfinite(matrix).all()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(v1_documents | json_values)
def test_v1_parser_never_crashes(doc):
    check_parsed(parse_v1, doc, SCHEMA)
    check_parsed(parse_v1, doc, TEXT_SCHEMA)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(v2_documents)
def test_v2_parser_never_crashes(doc):
    check_parsed(parse_v2, doc, SCHEMA)
    check_parsed(parse_v2, doc, TEXT_SCHEMA)


@settings(max_examples=300)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_json_parser_only_raises_payload_errors(body):
    try:
        parse_json(body)
    except PayloadError as exc:
        assert exc.reason == "malformed_json"


@settings(max_examples=300)
@given(
    json_values
    | st.lists(st.dictionaries(st.sampled_from(["request_id", "predicted", "actual", "x"]), json_values), max_size=3)
)
def test_feedback_parser_never_crashes(doc):
    for task, classes in (("classification", ["0", "1"]), ("regression", [])):
        try:
            items = parse_feedback(doc, task, classes)
        except PayloadError as exc:
            assert 400 <= exc.status < 500
            continue
        assert items and all((item.request_id is None) != (item.predicted is None) for item in items)


def test_deeply_nested_json_is_a_clean_error():
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_json(b"[" * 100_000)


def test_v1_lists_and_named_objects_agree():
    by_list = parse_v1({"instances": [[1, 2.5, 3], [4, 5, 6]]}, SCHEMA)
    by_name = parse_v1({"instances": [{"c": 3, "b": 2.5, "a": 1}, {"a": 4, "b": 5, "c": 6}]}, SCHEMA)
    assert by_list.dtype == np.float64 and (by_list == by_name).all()


@pytest.mark.parametrize(
    "doc, reason, fragment",
    [
        ({"instances": [[1, 2]]}, "feature_count", "row 0 has 2 values; the model takes 3"),
        ({"instances": [{"a": 1, "b": 2, "x": 3}]}, "feature_names", "missing ['c']; unknown ['x']"),
        ({"instances": [[1, "2", 3]]}, "non_numeric", "feature 'b': expected a number"),
        ({"instances": [[1, True, 3]]}, "non_numeric", "feature 'b'"),
        ({"instances": [[1, 2, None]]}, "non_numeric", "feature 'c'"),
        ({"instances": [[1, 2, float("nan")]]}, "non_finite", "feature 'c'"),
        ({"instances": [[1, 10**400, 3]]}, "non_finite", "too large"),
        ({"instances": []}, "invalid_payload", "non-empty"),
        ({"rows": []}, "invalid_payload", '"instances"'),
    ],
)
def test_v1_errors_name_the_problem(doc, reason, fragment):
    with pytest.raises(PayloadError) as info:
        parse_v1(doc, SCHEMA)
    assert info.value.reason == reason and fragment in info.value.message


def test_v2_tensor_flat_nested_and_named_agree():
    flat = parse_v2(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}, SCHEMA
    )
    nested = parse_v2(
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}]}, SCHEMA
    )
    named = parse_v2(
        {
            "inputs": [
                {"name": n, "datatype": "INT64", "shape": [2], "data": d}
                for n, d in (("c", [3, 6]), ("a", [1, 4]), ("b", [2, 5]))
            ]
        },
        SCHEMA,
    )
    assert (flat == nested).all() and (flat == named).all() and flat.tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    "inputs, reason, fragment",
    [
        ([{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}], "feature_count", "[batch, 3]"),
        ([{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3]}], "invalid_payload", "do not fill"),
        (
            [{"name": "x", "datatype": "BYTES", "shape": [1, 3], "data": ["1", "2", "3"]}],
            "invalid_payload",
            "BYTES is not supported",
        ),
        ([{"name": "x", "datatype": "INT32", "shape": [1, 3], "data": [1, 2.5, 3]}], "non_numeric", "not an integer"),
        ([{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}], "feature_names", "missing ['b', 'c']"),
        (
            [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [[[1, 2, 3]]]}],
            "invalid_payload",
            "nested deeper",
        ),
    ],
)
def test_v2_errors_name_the_problem(inputs, reason, fragment):
    with pytest.raises(PayloadError) as info:
        parse_v2({"inputs": inputs}, SCHEMA)
    assert info.value.reason == reason and fragment in info.value.message


def test_text_categories_keep_strings_for_the_model():
    matrix = parse_v1({"instances": [[1.5, "red"], [2, 3]]}, TEXT_SCHEMA)
    assert matrix.dtype == object and matrix[0, 1] == "red" and matrix[1, 1] == 3
    with pytest.raises(PayloadError, match="feature 'size': expected a number"):
        parse_v1({"instances": [["big", "red"]]}, TEXT_SCHEMA)


def test_feedback_forms():
    items = parse_feedback(
        [{"request_id": "r1", "actual": [1, 0]}, {"predicted": 1.0, "actual": "0"}], "classification", ["0", "1"]
    )
    assert items[0].request_id == "r1" and items[0].actual == ["1", "0"]
    assert (items[1].predicted, items[1].actual) == ("1", "0")
    with pytest.raises(PayloadError) as info:
        parse_feedback({"predicted": 1, "actual": 7}, "classification", ["0", "1"])
    assert info.value.reason == "unknown_class"
    with pytest.raises(PayloadError, match="exactly one"):
        parse_feedback({"request_id": "r", "predicted": 1, "actual": 1}, "classification", ["0", "1"])
    with pytest.raises(PayloadError, match="unknown field"):
        parse_feedback({"request_id": "r", "actaul": 1, "actual": 1}, "classification", ["0", "1"])
    assert parse_feedback({"predicted": 2, "actual": 2.5}, "regression", [])[0].actual == 2.5
