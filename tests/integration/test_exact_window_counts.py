"""A window's counts are real observation counts, read on a real Prometheus.

``increase()`` scales what it sees between a window's first and last samples up to the whole
window, so a count becomes fractional and inflated (a chi-squared test on such numbers finds
drift that is not there). The window expression of ``prometheus.queries`` takes the counter's
difference between the window's edges instead; these series, backfilled at 30 s scrapes, hold
every case it distinguishes.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from modelwarden.prometheus import queries
from tests.integration.evaluate_history import hours_ago_aligned

SCRAPE = 30
WINDOW = timedelta(minutes=2)
SELECTOR = queries.Selector("fraud", "stable", "1")


def _samples(name: str, values, times) -> list[str]:
    return [f'{queries.PREDICTIONS}{{model="fraud",track="stable",version="1",series="{name}"}} {v} {t}'
            for v, t in zip(values, times)]


@pytest.fixture(scope="module")
def counters(tmp_path_factory):
    from tests.conftest import prometheus_servers

    start = hours_ago_aligned(1)
    times = start + SCRAPE * np.arange(120)
    rng = np.random.default_rng(7)
    steady = np.cumsum(np.concatenate([[0], rng.integers(0, 50, 119)]))
    born = np.concatenate([[0], np.cumsum(rng.integers(1, 50, 3))])  # first scraped inside the last window, at 0
    reset = steady.copy()
    reset[-3:] = [5, 30, 60]  # the process restarted inside the last window
    lines = [f"# TYPE {queries.PREDICTIONS[:-len('_total')]} counter"]
    lines += _samples("steady", steady, times) + _samples("born", born, times[-4:]) + _samples("reset", reset, times)
    directory = tmp_path_factory.mktemp("exact-counts")
    with prometheus_servers(lambda: directory) as make:
        yield make("\n".join(lines) + "\n# EOF\n"), times, {"steady": steady, "born": born, "reset": reset}


def _by_series(server, promql: str, at: float) -> dict[str, float]:
    return {row["metric"]["series"]: float(row["value"][1]) for row in server.query(promql, at=at)}


def test_counts_are_the_growth_between_the_scrapes_at_the_edges_not_an_extrapolation(counters):
    server, times, values = counters
    at = float(times[-1]) - 15  # between scrapes, as most evaluations are
    exact = _by_series(server, queries._window(queries.PREDICTIONS, SELECTOR, WINDOW, None), at)
    extrapolated = _by_series(server, f'increase({queries.PREDICTIONS}{{model="fraud"}}[2m])', at)
    # The last scrape before the evaluation minus the last scrape before the window's start.
    assert exact["steady"] == values["steady"][-2] - values["steady"][-6]
    assert exact["born"] == values["born"][-2] - 0  # a series that appeared inside the window, from 0
    assert all(float(v).is_integer() for v in exact.values())
    assert not extrapolated["steady"].is_integer()  # what increase() would have counted instead
    # A reset inside the window: PromQL's own reset handling (never negative, never dropped).
    assert exact["reset"] == pytest.approx(extrapolated["reset"]) and exact["reset"] > 0


def test_an_earlier_window_is_exact_too(counters):
    server, times, values = counters
    at = float(times[-1]) - 15
    exact = _by_series(server, queries._window(queries.PREDICTIONS, SELECTOR, WINDOW, timedelta(minutes=10)), at)
    assert exact == {"steady": values["steady"][-22] - values["steady"][-26], "reset": values["reset"][-22] - values["reset"][-26]}


def test_the_grouped_queries_sum_exact_counts(counters):
    server, times, values = counters
    at = float(times[-1]) - 15
    promql = queries.counters(SELECTOR, WINDOW, ["predictions"])
    (row,) = server.query(promql, at=at)
    assert row["metric"][queries.QUANTITY_LABEL] == "predictions"
    reset = float(_by_series(server, f'increase({queries.PREDICTIONS}{{series="reset"}}[2m])', at)["reset"])
    assert float(row["value"][1]) == pytest.approx(values["steady"][-2] - values["steady"][-6] + values["born"][-2] + reset)
