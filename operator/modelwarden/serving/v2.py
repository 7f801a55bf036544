"""Request parsing for the Open Inference Protocol (V2): tensors down to a feature matrix.

Strict where the protocol is: a tensor's values must fit its declared ``datatype`` (an INT8 holds
-128..127, a UINT8 no negatives, an FP16 at most 65504), and its ``data`` must fill its ``shape``
exactly, flat or nested to the shape's full rank (ragged rows are refused even when their total
matches). Every refusal is a 400 naming the input. The matrix then passes the same checks as a
V1 request (serving.payload.feature_matrix).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelwarden.contract.reasons import ErrorReason
from modelwarden.serving.payload import (
    FeatureSchema,
    PayloadError,
    check_names,
    feature_matrix,
    is_number,
)

V2_NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
# The closed range of each V2 datatype a value must fit (JSON numbers are arbitrary precision).
V2_RANGES: dict[str, tuple[float, float]] = {
    "FP16": (-65504.0, 65504.0),
    "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
    **{f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": (0, 2**bits - 1) for bits in (8, 16, 32, 64)},
}
MAX_TENSOR_RANK = 2  # [batch, features] or [batch] / [batch, 1] per feature


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
    if len(shape) > MAX_TENSOR_RANK:
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD,
            f"input {name!r} has shape {shape}; this server takes [batch, features] or one [batch] tensor per feature",
        )
    if not isinstance(data, list):
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"inputs[{index}] ({name}): 'data' must be a list")
    return _Tensor(name, datatype.upper(), shape, _flatten(data, shape, name))


def _flatten(data: list[Any], shape: list[int], name: str) -> list[Any]:
    """Row-major values of tensor data that fills ``shape`` exactly: flat (as many values as the
    shape holds) or nested to the shape's full rank with every list as long as its dimension.
    Ragged rows are refused even when their total happens to match."""
    size = math.prod(shape)
    if not any(isinstance(item, list) for item in data):
        if len(data) != size:
            raise PayloadError(
                ErrorReason.INVALID_PAYLOAD, f"input {name!r}: {len(data)} values do not fill shape {shape}"
            )
        return data
    if len(shape) == 1:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"input {name!r}: data is nested deeper than its shape {shape}")
    rows, width = shape
    if len(data) != rows:
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"input {name!r}: {len(data)} rows of data for shape {shape}"
        )
    flat: list[Any] = []
    for r, row in enumerate(data):
        if not isinstance(row, list):
            raise PayloadError(
                ErrorReason.INVALID_PAYLOAD, f"input {name!r}: row {r} is not a list (data mixes flat and nested values)"
            )
        if any(isinstance(value, list) for value in row):
            raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"input {name!r}: data is nested deeper than its shape {shape}")
        if len(row) != width:
            raise PayloadError(
                ErrorReason.INVALID_PAYLOAD,
                f"input {name!r}: row {r} has {len(row)} values; shape {shape} needs {width} in every row",
            )
        flat.extend(row)
    return flat


def _check_tensor_values(tensor: _Tensor, allow_text: bool) -> None:
    """The tensor's datatype is one this server takes, and every number fits it (an INT8 holds
    -128..127, a UINT8 no negatives, an FP16 at most 65504). Non-numbers and non-finite floats
    are left to feature_matrix, which names the row and feature."""
    if tensor.datatype == "BYTES" and allow_text:
        return
    if tensor.datatype not in V2_NUMERIC_TYPES:
        allowed = "numeric (FP16/32/64, INT*, UINT*)" + (" or BYTES" if allow_text else "")
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"input {tensor.name!r}: datatype {tensor.datatype} is not supported; use {allowed}"
        )
    integer = tensor.datatype.startswith(("INT", "UINT"))
    if integer:
        for value in tensor.data:
            if type(value) is not int:
                raise PayloadError(
                    ErrorReason.NON_NUMERIC,
                    f"input {tensor.name!r} ({tensor.datatype}): {json.dumps(value)[:80]} is not an integer",
                )
    bounds = V2_RANGES.get(tensor.datatype)
    if bounds is None:
        return  # FP64: any finite float
    low, high = bounds
    for position, value in enumerate(tensor.data):
        if is_number(value) and not low <= value <= high and (integer or math.isfinite(value)):
            raise PayloadError(
                ErrorReason.INVALID_PAYLOAD,
                f"input {tensor.name!r} ({tensor.datatype}): value {json.dumps(value)[:40]} at position {position} "
                f"is outside the datatype's range [{low:g}, {high:g}]",
            )


def _from_matrix_tensor(tensor: _Tensor, schema: FeatureSchema) -> np.ndarray:
    batch, width = tensor.shape
    if width != schema.width:
        raise PayloadError(
            ErrorReason.FEATURE_COUNT,
            f"input {tensor.name!r} has shape {tensor.shape}; the model takes [batch, {schema.width}]",
        )
    _check_tensor_values(tensor, allow_text=False)
    return feature_matrix([tensor.data[r * width : (r + 1) * width] for r in range(batch)], schema)


def _from_named_tensors(tensors: list[_Tensor], schema: FeatureSchema) -> np.ndarray:
    check_names([t.name for t in tensors], schema, "inputs")
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
        _check_tensor_values(tensor, allow_text=c in schema.categorical and schema.text_input)
        columns.append(tensor.data)
    return feature_matrix([list(row) for row in zip(*columns)], schema)
