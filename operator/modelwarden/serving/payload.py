"""Request parsing for KServe V1 and feedback, and the checks every feature matrix passes.

Everything a client can send either becomes a feature matrix in the profile's column order or a
:class:`PayloadError` naming the problem; nothing else escapes (tests/unit/serving fuzz this with
hypothesis). Values are checked strictly: JSON booleans, strings and nulls are not numbers, and
NaN/Infinity (which Python's json accepts) are rejected, and so are values that would poison the
exported sums (serving.limits): a :class:`RejectedValue`, counted apart from other client errors.
The Open Inference Protocol (V2) is parsed in serving.v2, down to the same feature_matrix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelwarden.contract.metrics import level_key
from modelwarden.contract.profile import Profile
from modelwarden.contract.reasons import ErrorReason
from modelwarden.serving.limits import DEFAULT_RANGE_FACTOR, Range, ValueLimits

FEEDBACK_KEYS = frozenset({"request_id", "predicted", "token", "actual"})


class PayloadError(ValueError):
    """A client error: ``reason`` is the metrics label, ``status`` the HTTP status."""

    def __init__(self, reason: ErrorReason, message: str, status: int = 400):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


class RejectedValue(PayloadError):
    """A non-finite or implausible value (serving.limits): refused before it can reach the
    exported sums, and counted in ``modelwarden_rejected_values_total`` by ``input``."""

    def __init__(self, input: str, reason: ErrorReason, message: str, status: int = 400):
        super().__init__(reason, message, status)
        self.input = input


@dataclass(frozen=True)
class FeatureSchema:
    """What a request must supply: the profile's features, in order (or the model's, without a profile)."""

    names: tuple[str, ...]
    categorical: frozenset[int]
    text_input: bool  # some categorical level is not a number, so the model takes an object array
    limits: ValueLimits | None = field(default=None, compare=False)  # None: only the magnitude bound

    @classmethod
    def from_profile(cls, profile: Profile, range_factor: float = DEFAULT_RANGE_FACTOR) -> "FeatureSchema":
        categorical = frozenset(i for i, f in enumerate(profile.features) if f.kind == "categorical")
        text = any(not _is_number_text(level) for i in categorical for level in profile.features[i].levels or [])
        return cls(tuple(profile.feature_names), categorical, text, ValueLimits.from_profile(profile, range_factor))

    @classmethod
    def without_profile(cls, names: Sequence[str]) -> "FeatureSchema":
        """The model's own input names, all numeric, only the magnitude bound: nothing more is known."""
        return cls(tuple(names), frozenset(), False, None)

    @property
    def value_limits(self) -> ValueLimits:
        return self.limits if self.limits is not None else ValueLimits.squarable(self.width)

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


def is_number(value: Any) -> bool:
    return type(value) in (int, float)  # excludes bool, which is an int subclass


def _check_value(value: Any, row: int, column: int, schema: FeatureSchema) -> None:
    if is_number(value):
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
        _require_accepted(_floats(matrix[:, numeric]), schema, numeric)
        for c in schema.categorical:
            for r, value in enumerate(matrix[:, c]):
                if type(value) is float and not math.isfinite(value):
                    _raise_non_finite(r, schema.names[c])
        return matrix
    matrix = _floats(rows)
    _require_accepted(matrix, schema, None)
    return matrix


def _floats(values: Any) -> np.ndarray:
    try:
        return np.asarray(values, dtype=float)
    except OverflowError as exc:
        raise RejectedValue("features", ErrorReason.NON_FINITE, "a feature value is too large to be a 64-bit float") from exc


def _require_accepted(matrix: np.ndarray, schema: FeatureSchema, columns: list[int] | None) -> None:
    """Finite, and inside each feature's accepted range (``columns``: which features the matrix holds, None: all)."""
    finite = np.isfinite(matrix)
    if not finite.all():
        r, c = (int(i) for i in np.argwhere(~finite)[0])
        _raise_non_finite(r, schema.names[c if columns is None else columns[c]])
    limits = schema.value_limits
    outside = limits.first_outside(matrix, columns)
    if outside is not None:
        r, c = outside
        feature = c if columns is None else columns[c]
        accepted = limits.features[feature]
        raise RejectedValue(
            "features", ErrorReason.OUT_OF_RANGE,
            f"row {r}, feature {schema.names[feature]!r}: {float(matrix[r, c]):.6g} is outside the accepted range "
            f"{accepted.describe()} ({limits.explain(accepted)})",
            status=422,
        )


def _raise_non_finite(row: int, name: str) -> None:
    raise RejectedValue(
        "features", ErrorReason.NON_FINITE, f"row {row}, feature {name!r}: NaN and infinite values are not accepted"
    )


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
        check_names(instance.keys(), schema, f"instance {index}")
        return [instance[name] for name in schema.names]
    raise PayloadError(
        ErrorReason.INVALID_PAYLOAD, f"instance {index} must be a list of feature values or an object keyed by feature name"
    )


def check_names(given: Any, schema: FeatureSchema, where: str) -> None:
    given = list(given)
    missing = [name for name in schema.names if name not in given]
    unknown = [name for name in given if name not in schema.names]
    if missing or unknown:
        parts = [f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else ""]
        raise PayloadError(
            ErrorReason.FEATURE_NAMES, f"{where}: {'; '.join(p for p in parts if p)} (expected {list(schema.names)})"
        )


# -- feedback -----------------------------------------------------------------------------------


def require_in_range(number: float, accepted: Range, where: str, limits: ValueLimits) -> None:
    """A regression feedback value inside ``accepted``, else a 422 naming it."""
    if number not in accepted:
        raise RejectedValue(
            "feedback", ErrorReason.OUT_OF_RANGE,
            f"{where}: {number:.6g} is outside the accepted range {accepted.describe()} ({limits.explain(accepted)})",
            status=422,
        )


@dataclass(frozen=True)
class FeedbackItem:
    """Ground truth: for the predictions a feedback ``token`` vouches for (any replica, any time),
    for those of ``request_id`` (this replica's recent requests), or for a prediction the client
    echoes. ``actual`` is a list for a token or a request id of several rows."""

    actual: Any
    request_id: str | None = None
    predicted: Any = None
    token: str | None = None


def parse_feedback(
    doc: Any, task: str, classes: Sequence[str], limits: ValueLimits | None = None
) -> list[FeedbackItem]:
    """One object or a non-empty list of them; labels are canonicalised with ``level_key``.

    Regression values must lie in ``limits.feedback`` (default: only the magnitude bound)."""
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, "the feedback list is empty")
    limits = limits or ValueLimits.squarable(0)
    return [_feedback_item(item, i, task, classes, limits) for i, item in enumerate(items)]


def _feedback_item(item: Any, index: int, task: str, classes: Sequence[str], limits: ValueLimits) -> FeedbackItem:
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
            _label(item["actual"], f"{where}.actual", task, classes, limits),
            predicted=_label(item["predicted"], f"{where}.predicted", task, classes, limits),
        )
    reference = item[given[0]]
    if not isinstance(reference, str) or not reference:
        raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"{where}: {given[0]} must be a non-empty string")
    actual = item["actual"]
    if isinstance(actual, list):
        if not actual:
            raise PayloadError(ErrorReason.INVALID_PAYLOAD, f"{where}: actual is an empty list")
        actual = [_label(a, f"{where}.actual[{i}]", task, classes, limits) for i, a in enumerate(actual)]
    else:
        actual = _label(actual, f"{where}.actual", task, classes, limits)
    if given[0] == "token":
        return FeedbackItem(actual, token=reference)
    return FeedbackItem(actual, request_id=reference)


def _label(value: Any, where: str, task: str, classes: Sequence[str], limits: ValueLimits) -> Any:
    """A class label (its canonical string) or, for regression, a finite number in the accepted range."""
    if task == "regression":
        if not is_number(value):
            raise PayloadError(ErrorReason.NON_NUMERIC, f"{where}: expected a number, got {json.dumps(value)[:80]}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise RejectedValue("feedback", ErrorReason.NON_FINITE, f"{where}: NaN and infinite values are not accepted")
        require_in_range(number, limits.feedback, where, limits)
        return number
    if not (is_number(value) or type(value) is str):
        raise PayloadError(
            ErrorReason.INVALID_PAYLOAD, f"{where}: a class label must be a string or number, got {json.dumps(value)[:80]}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(ErrorReason.NON_FINITE, f"{where}: NaN and infinite values are not class labels")
    key = level_key(value)
    if classes and key not in classes:
        raise PayloadError(ErrorReason.UNKNOWN_CLASS, f"{where}: {key!r} is not one of the model's classes {list(classes)}")
    return key
