"""Time on the wire: Kubernetes-style durations ("30s", "10m", "1h30m", "7d") parsed once into
timedelta, and RFC 3339 timestamps as metadata and status carry them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# One or more <number><unit> groups, largest first is not enforced ("90s" and "1m30s" both read well).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
# Every duration of the API is at most a year: longer ones are typos (99999999999d overflows
# Python's timedelta) and no window, offset or cooldown needs more.
MAX_DURATION = timedelta(days=365)
DURATION_MAX_LENGTH = 32


def parse_duration(value: object) -> timedelta:
    """Accept a duration string (or a timedelta); reject anything else with the expected format."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: expected e.g. '30s', '10m', '1h30m', '7d'")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {value!r} is too long: must be at most {format_duration(MAX_DURATION)}")
    return timedelta(seconds=seconds)


def cel_seconds(expr: str) -> str:
    """A CEL expression for the seconds (a double) of the duration string `expr`, as parse_duration
    reads it: the API server checks bounds and orders of durations with it at admission."""
    to_seconds = ("g.endsWith('ms') ? double(g.substring(0, size(g) - 2)) / 1000.0"
                  " : double(g.substring(0, size(g) - 1)) * (g.endsWith('d') ? 86400.0"
                  " : g.endsWith('h') ? 3600.0 : g.endsWith('m') ? 60.0 : 1.0)")
    return f"{expr}.findAll('[0-9]+(?:\\\\.[0-9]+)?(?:ms|s|m|h|d)').map(g, {to_seconds}).sum()"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than 0s")
    return value


def _schema(positive: bool) -> dict[str, Any]:
    rules = [{"rule": f"{cel_seconds('self')} <= {MAX_DURATION.total_seconds()}",
              "message": f"must be at most {format_duration(MAX_DURATION)}"}]
    if positive:
        rules.append({"rule": f"{cel_seconds('self')} > 0.0", "message": "must be greater than 0s"})
    return {"type": "string", "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": rules}


def format_duration(value: timedelta) -> str:
    """The shortest exact string for a duration: 90s -> '1m30s', 86400s -> '1d'."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, total_ms = divmod(total_ms, ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_schema(positive=False)),
]
"""A duration from 0s to 365d."""

PositiveDuration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_positive),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_schema(positive=True)),
]
"""A duration greater than 0s and at most 365d (intervals, windows, offsets, timeouts)."""


def format_timestamp(moment: datetime) -> str:
    """A Kubernetes timestamp (RFC 3339, UTC, whole seconds), as in metadata and status."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime | None:
    """A Kubernetes timestamp ('...Z' or with an offset); None when absent."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def format_age(text: str | None, now: datetime) -> str | None:
    """How old a timestamp is, as kubectl shows it: its largest whole unit ('45s', '5m', '2d');
    None when absent or not a timestamp."""
    try:
        moment = parse_timestamp(text)
    except ValueError:
        return None
    if moment is None:
        return None
    seconds = max(int((now - moment).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
