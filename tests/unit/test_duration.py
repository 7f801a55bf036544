from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelwarden.api.duration import format_duration, parse_duration


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_parses_kubernetes_style_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "10 m", "-5m", "5x", "m5", "1h 30m", "P1D", 30, None])
def test_rejects_malformed_durations_with_the_expected_format(text):
    with pytest.raises(ValueError, match="expected e.g."):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**10))
def test_format_then_parse_round_trips(milliseconds):
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


def test_formats_the_shortest_exact_string():
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(days=1)) == "1d"
    assert format_duration(timedelta(0)) == "0s"


def test_format_age_is_the_largest_whole_unit_as_kubectl_shows_it():
    import datetime

    from modelwarden.api.duration import format_age

    now = datetime.datetime(2026, 1, 2, 1, 0, tzinfo=datetime.timezone.utc)
    assert [format_age(t, now) for t in ("2026-01-02T00:59:15Z", "2026-01-02T00:55:00Z", "2026-01-02T00:00:00Z",
                                         "2026-01-01T00:00:00Z", "2026-01-02T02:00:00Z")] == ["45s", "5m", "1h", "1d", "0s"]
    assert format_age(None, now) is None and format_age("not a time", now) is None
