"""Request parsing for KServe V1, the Open Inference Protocol (V2) and feedback.

Everything a client can send either becomes a feature matrix in the profile's column order or a
:class:`PayloadError` naming the problem; nothing else escapes (tests/unit/serving fuzz this with
hypothesis). Values are checked strictly: JSON booleans, strings and nulls are not numbers, and
NaN/Infinity (which Python's json accepts) are rejected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelwarden.contract.metrics import level_key
from modelwarden.contract.profile import Profile
from modelwarden.contract.reasons import ErrorReason

V2_NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
FEEDBACK_KEYS = frozenset({"request_id", "predicted", "token", "actual"})


class PayloadError(ValueError):
    """A client error: ``reason`` is the metrics label, ``status`` the HTTP status."""

    def __init__(self, reason: ErrorReason, message: str, status: int = 400):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True)
class FeatureSchema:
    """What a request must supply: the profile's features, in order."""

    names: tuple[str, ...]
    categorical: frozenset[int]
    text_input: bool  # some categorical level is not a number, so the model takes an object array

    @classmethod
    def from_profile(cls, profile: Profile) -> "FeatureSchema":
        categorical = frozenset(i for i, f in enumerate(profile.features) if f.kind == "categorical")
        text = any(not _is_number_text(level) for i in categorical for level in profile.features[i].levels or [])
        return cls(tuple(profile.feature_names), categorical, text)

    @property
    def width(self) -> int:
        return len(self.names)


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError(ErrorReason.MALFORMED_JSON, f"request body is not valid JSON: {str(exc)[:200]}") from exc


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)  # excludes bool, which is an int subclass


def _check_value(value: Any, row: int, column: int, schema: FeatureSchema) -> None:
    if _is_number(value):
        return
    name = schema.names[column]
    if column in schema.categorical and schema.text_input and type(value) is str:
        return
    expected = "a string or number" if column in schema.categorical and schema.text_input else "a number"
    raise PayloadError(
        ErrorReason.NON_NUMERIC, f"row {row}, feature {name!r}: expected {expected}, got {json.dumps(value)[:80]}"
    )


def feature_matrix(rows: Sequence[Sequence[Any]], schema: FeatureSchema) -> np.ndarray:
    """Validated rows as the model's input: float64, or object when text categories are present."""
    if not rows:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, "the batch is empty")
    for r, row in enumerate(rows):
        if len(row) != schema.width:
            raise PayloadError(
                ErrorReason.FEATURE_COUNT, f"row {r} has {len(row)} values; the model takes {schema.width} features"
            )
        for c, value in enumerate(row):
            _check_value(value, r, c, schema)
    if schema.text_input:
        matrix = np.array(rows, dtype=object)
        numeric = [c for c in range(schema.width) if c not in schema.categorical]
        _require_finite(_floats(matrix[:, numeric]), schema, numeric)
        for c in schema.categorical:
            for r, value in enumerate(matrix[:, c]):
                if type(value) is float and not math.isfinite(value):
                    _raise_non_finite(r, schema.names[c])
        return matrix
    matrix = _floats(rows)
    _require_finite(matrix, schema, list(range(schema.width)))
    return matrix


def _floats(values: Any) -> np.ndarray:
    try:
        return np.asarray(values, dtype=float)
    except OverflowError as exc:
        raise PayloadError(ErrorReason.NON_FINITE, "a feature value is too large to be a 64-bit float") from exc


def _require_finite(matrix: np.ndarray, schema: FeatureSchema, columns: list[int]) -> None:
    finite = np.isfinite(matrix)
    if not finite.all():
        r, c = (int(i) for i in np.argwhere(~finite)[0])
        _raise_non_finite(r, schema.names[columns[c]])


def _raise_non_finite(row: int, name: str) -> None:
    raise PayloadError(ErrorReason.NON_FINITE, f"row {row}, feature {name!r}: NaN and infinite values are not accepted")


# -- KServe V1 ----------------------------------------------------------------------------------


def parse_v1(doc: Any, schema: FeatureSchema) -> np.ndarray:
    """``{"instances": [[...], ...]}`` or ``{"instances": [{"feature": value, ...}, ...]}``."""
    if not isinstance(doc, dict) or "instances" not in doc:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, 'expected a JSON object with "instances": [...]')
    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, '"instances" must be a non-empty list')
    return feature_matrix([_v1_row(instance, i, schema) for i, instance in enumerate(instances)], schema)


def _v1_row(instance: Any, index: int, schema: FeatureSchema) -> Sequence[Any]:
    if isinstance(instance, list):
        return instance
    if isinstance(instance, dict):
        _check_names(instance.keys(), schema, f"instance {index}")
        return [instance[name] for name in schema.names]
    raise PayloadError(
        ErrorReason.INVALID_PAYLOAD, f"instance {index} must be a list of feature values or an object keyed by feature name"
    )


def _check_names(given: Any, schema: FeatureSchema, where: str) -> None:
    given = list(given)
    missing = [name for name in schema.names if name not in given]
    unknown = [name for name in given if name not in schema.names]
    if missing or unknown:
        parts = [f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else ""]
        raise PayloadError(
            ErrorReason.FEATURE_NAMES, f"{where}: {'; '.join(p for p in parts if p)} (expected {list(schema.names)})"
        )


# -- Open Inference Protocol (V2) ---------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


def parse_v2(doc: Any, schema: FeatureSchema) -> np.ndarray:
    """One tensor of shape [batch, n_features], or one [batch] (or [batch, 1]) tensor per feature."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, 'expected a JSON object with a non-empty "inputs" list')
    tensors = [_tensor(item, i) for i, item in enumerate(doc["inputs"])]
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and tensors[0].name not in schema.names:
        return _from_matrix_tensor(tensors[0], schema)
    return _from_named_tensors(tensors, schema)


def _tensor(item: Any, index: int) -> _Tensor:
    if not isinstance(item, dict):
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"inputs[{index}] must be an object with name, datatype, shape, data"
        )
    name, datatype, shape, data = (item.get(key) for key in ("name", "datatype", "shape", "data"))
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"inputs[{index}] needs string 'name' and 'datatype'")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"inputs[{index}] ({name}): 'shape' must be a list of non-negative integers"
        )
    if not isinstance(data, list):
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"inputs[{index}] ({name}): 'data' must be a list")
    return _Tensor(name, datatype.upper(), shape, _flatten(data, len(shape), name))


def _flatten(data: list[Any], rank: int, name: str) -> list[Any]:
    """Row-major values of flat or nested tensor data (nesting no deeper than the shape's rank)."""
    flat: list[Any] = []
    stack: list[tuple[list[Any], int, int]] = [(data, 0, 1)]  # (list, next position, depth)
    while stack:
        items, start, depth = stack.pop()
        for position in range(start, len(items)):
            item = items[position]
            if isinstance(item, list):
                if depth >= rank:
                    raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"input {name!r}: data is nested deeper than its shape")
                stack.append((items, position + 1, depth))
                stack.append((item, 0, depth + 1))
                break
            flat.append(item)
    return flat


def _check_tensor_values(tensor: _Tensor, allow_text: bool) -> None:
    if tensor.datatype == "BYTES" and allow_text:
        return
    if tensor.datatype not in V2_NUMERIC_TYPES:
        allowed = "numeric (FP16/32/64, INT*, UINT*)" + (" or BYTES" if allow_text else "")
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"input {tensor.name!r}: datatype {tensor.datatype} is not supported; use {allowed}"
        )
    if tensor.datatype.startswith(("INT", "UINT")):
        for value in tensor.data:
            if type(value) is not int:
                raise PayloadError(
                    ErrorReason.NON_NUMERIC,
                    f"input {tensor.name!r} ({tensor.datatype}): {json.dumps(value)[:80]} is not an integer",
                )


def _from_matrix_tensor(tensor: _Tensor, schema: FeatureSchema) -> np.ndarray:
    batch, width = tensor.shape
    if width != schema.width:
        raise PayloadError(
            ErrorReason.FEATURE_COUNT,
            f"input {tensor.name!r} has shape {tensor.shape}; the model takes [batch, {schema.width}]",
        )
    if len(tensor.data) != batch * width:
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"input {tensor.name!r}: {len(tensor.data)} values do not fill shape {tensor.shape}"
        )
    _check_tensor_values(tensor, allow_text=False)
    return feature_matrix([tensor.data[r * width : (r + 1) * width] for r in range(batch)], schema)


def _from_named_tensors(tensors: list[_Tensor], schema: FeatureSchema) -> np.ndarray:
    _check_names([t.name for t in tensors], schema, "inputs")
    if len(tensors) != len({t.name for t in tensors}):
        raise PayloadError(ErrorReason.FEATURE_NAMES, "inputs: a feature is given more than once")
    by_name = {t.name: t for t in tensors}
    batch = by_name[schema.names[0]].shape[0]
    columns = []
    for c, name in enumerate(schema.names):
        tensor = by_name[name]
        if tensor.shape not in ([batch], [batch, 1]):
            raise PayloadError(
                ErrorReason.INVALID_PAYLOAD, f"input {name!r} has shape {tensor.shape}; expected [{batch}] or [{batch}, 1]"
            )
        if len(tensor.data) != batch:
            raise PayloadError(
                ErrorReason.INVALID_PAYLOAD, f"input {name!r}: {len(tensor.data)} values do not fill shape {tensor.shape}"
            )
        _check_tensor_values(tensor, allow_text=c in schema.categorical and schema.text_input)
        columns.append(tensor.data)
    return feature_matrix([list(row) for row in zip(*columns)], schema)


# -- feedback -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackItem:
    """Ground truth: for the predictions a feedback ``token`` vouches for (any replica, any time),
    for those of ``request_id`` (this replica's recent requests), or for a prediction the client
    echoes. ``actual`` is a list for a token or a request id of several rows."""

    actual: Any
    request_id: str | None = None
    predicted: Any = None
    token: str | None = None


def parse_feedback(doc: Any, task: str, classes: Sequence[str]) -> list[FeedbackItem]:
    """One object or a non-empty list of them; labels are canonicalised with ``level_key``."""
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, "the feedback list is empty")
    return [_feedback_item(item, i, task, classes) for i, item in enumerate(items)]


def _feedback_item(item: Any, index: int, task: str, classes: Sequence[str]) -> FeedbackItem:
    where = f"feedback[{index}]"
    if not isinstance(item, dict) or "actual" not in item:
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD,
            f'{where}: expected {{"token": ..., "actual": ...}}, {{"request_id": ..., "actual": ...}} '
            'or {"predicted": ..., "actual": ...}',
        )
    unknown = sorted(set(item) - FEEDBACK_KEYS)
    if unknown:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"{where}: unknown field(s) {unknown}")
    given = [key for key in ("token", "request_id", "predicted") if key in item]
    if len(given) != 1:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f'{where}: give exactly one of "token", "request_id" or "predicted"')
    if given[0] == "predicted":
        return FeedbackItem(
            _label(item["actual"], f"{where}.actual", task, classes),
            predicted=_label(item["predicted"], f"{where}.predicted", task, classes),
        )
    reference = item[given[0]]
    if not isinstance(reference, str) or not reference:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"{where}: {given[0]} must be a non-empty string")
    actual = item["actual"]
    if isinstance(actual, list):
        if not actual:
            raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"{where}: actual is an empty list")
        actual = [_label(a, f"{where}.actual", task, classes) for a in actual]
    else:
        actual = _label(actual, f"{where}.actual", task, classes)
    if given[0] == "token":
        return FeedbackItem(actual, token=reference)
    return FeedbackItem(actual, request_id=reference)


def _label(value: Any, where: str, task: str, classes: Sequence[str]) -> Any:
    """A class label (its canonical string) or, for regression, a finite number."""
    if task == "regression":
        if not _is_number(value):
            raise PayloadError(ErrorReason.NON_NUMERIC, f"{where}: expected a number, got {json.dumps(value)[:80]}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise PayloadError(ErrorReason.NON_FINITE, f"{where}: NaN and infinite values are not accepted")
        return number
    if not (_is_number(value) or type(value) is str):
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"{where}: a class label must be a string or number, got {json.dumps(value)[:80]}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(ErrorReason.NON_FINITE, f"{where}: NaN and infinite values are not class labels")
    key = level_key(value)
    if classes and key not in classes:
        raise PayloadError(ErrorReason.UNKNOWN_CLASS, f"{where}: {key!r} is not one of the model's classes {list(classes)}")
    return key
