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


def _samples(name: str, values, times, target: str = "") -> list[str]:
    return [f'{queries.PREDICTIONS}{{model="fraud",track="stable",version="1",series="{name}"{target}}} {v} {t}'
            for v, t in zip(values, times)]


def _process_start(target: str, started: float, times) -> list[str]:
    return [f"{queries.PROCESS_START}{{{target.lstrip(',')}}} {started} {t}" for t in times]


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
    # A new pod that served before its first scrape (first sample 40, not 0); its process started
    # inside the last window, as its target's process_start_time_seconds says.
    started = np.array([40, 75, 90])
    pod, old_pod = ',instance="10.0.0.9:8080",job="models"', ',instance="10.0.0.7:8080",job="models"'
    lines = [f"# TYPE {queries.PREDICTIONS[:-len('_total')]} counter"]
    lines += _samples("steady", steady, times) + _samples("born", born, times[-4:]) + _samples("reset", reset, times)
    lines += _samples("started", started, times[-3:], pod)
    # The same first sample from a process older than the window (its earlier samples lost): no exact count.
    lines += _samples("older process", started, times[-3:], old_pod)
    lines += [f"# TYPE {queries.PROCESS_START} gauge"]
    lines += _process_start(pod, float(times[-3]) - 10, times[-3:]) + _process_start(old_pod, float(times[0]) - 3600, times[-3:])
    directory = tmp_path_factory.mktemp("exact-counts")
    with prometheus_servers(lambda: directory) as make:
        yield make("\n".join(lines) + "\n# EOF\n"), times, {"steady": steady, "born": born, "reset": reset, "started": started}


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
    assert exact["started"] == values["started"][-2]  # from 0 at its process's start, inside the window
    assert exact["older process"] == pytest.approx(extrapolated["older process"])  # no proof it began at 0: PromQL's estimate
    assert all(float(v).is_integer() for v in exact.values())
    assert not extrapolated["steady"].is_integer()  # what increase() would have counted instead
    # A reset inside the window: PromQL's own reset handling (never negative, never dropped).
    assert exact["reset"] == pytest.approx(extrapolated["reset"]) and exact["reset"] > 0


def test_an_earlier_window_is_exact_too(counters):
    server, times, values = counters
    at = float(times[-1]) - 15
    exact = _by_series(server, queries._window(queries.PREDICTIONS, SELECTOR, WINDOW, timedelta(minutes=10)), at)
    assert exact == {"steady": values["steady"][-22] - values["steady"][-26], "reset": values["reset"][-22] - values["reset"][-26]}
    # The started pod's process began after that window: it is not in it (not counted from its start).


def test_the_grouped_queries_sum_exact_counts(counters):
    server, times, values = counters
    at = float(times[-1]) - 15
    promql = queries.counters(SELECTOR, WINDOW, ["predictions"])
    (row,) = server.query(promql, at=at)
    assert row["metric"][queries.QUANTITY_LABEL] == "predictions"
    estimated = _by_series(server, f'increase({queries.PREDICTIONS}{{series=~"reset|older process"}}[2m])', at)
    assert float(row["value"][1]) == pytest.approx(values["steady"][-2] - values["steady"][-6] + values["born"][-2]
                                                   + values["started"][-2] + estimated["reset"] + estimated["older process"])
