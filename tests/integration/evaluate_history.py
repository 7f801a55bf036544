"""Metrics-contract history for the analysis-engine integration tests.

:class:`History` writes counter and histogram series as OpenMetrics text for
``promtool tsdb create-blocks-from openmetrics`` (timestamps in seconds, all in the past), so a
test controls exactly what each window holds; the ``history_prometheus`` fixture (registered in
conftest.py) starts one real Prometheus per test module with such a history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy import stats

from tests.conftest import prometheus_servers

STEP_SECONDS = 60
NORMAL_EDGES = np.round(stats.norm.ppf(np.arange(1, 20) / 20), 6)  # 20 equiprobable bins of N(0, 1)


def format_le(edge: float) -> str:
    """prometheus_client's float formatting of ``le`` (what the model server exports)."""
    return "+Inf" if edge == np.inf else repr(float(edge))


def bin_probabilities(edges, mean: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Probability of each (edge[i-1], edge[i]] bin, +Inf bin last, for N(mean, scale)."""
    cdf = stats.norm.cdf((np.asarray(edges) - mean) / scale)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def hours_ago_aligned(hours: float) -> int:
    """A past start time on a whole minute (backfilled blocks must lie in the past)."""
    return int(time.time() - hours * 3600) // STEP_SECONDS * STEP_SECONDS


@dataclass
class History:
    """Counter series sampled every ``step`` seconds from ``start`` (all zero there) for ``steps`` steps."""

    start: int
    steps: int
    seed: int = 0
    step: int = STEP_SECONDS
    families: dict[str, list[str]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.times = self.start + self.step * np.arange(self.steps + 1)

    @property
    def end(self) -> int:
        return int(self.times[-1])

    def counter(self, family: str, sample: str, labels: dict[str, str], increments, kind: str = "counter",
                resets: tuple[int, ...] = ()) -> None:
        """One series; ``increments[k]`` happens during step k. ``kind`` is the OpenMetrics
        type ("unknown" for counters whose names do not end in _total). ``resets``: sample indexes
        at which the process restarted just after the previous sample (the counter starts again
        from 0, so the sample shows only that step's increments), as a restarted server does."""
        self.kinds.setdefault(family, kind)
        values = np.concatenate([[0.0], np.cumsum(np.broadcast_to(increments, (self.steps,)))])
        for index in sorted(resets):
            values[index:] -= values[index - 1]
        rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
        self.families.setdefault(family, []).extend(f"{sample}{{{rendered}}} {v:g} {t}" for v, t in zip(values, self.times))

    def histogram(self, family: str, labels: dict[str, str], edges, per_step: Callable[[int], tuple[int, np.ndarray]]) -> None:
        """Bucket series of one histogram; ``per_step(k)`` gives (observations, bin probabilities)."""
        counts = np.array([self.rng.multinomial(*per_step(k)) for k in range(self.steps)])
        cumulative_over_le = np.cumsum(counts, axis=1)
        for j, edge in enumerate([*edges, np.inf]):
            self.counter(family, f"{family}_bucket", {**labels, "le": format_le(edge)}, cumulative_over_le[:, j], "histogram")

    def openmetrics(self) -> str:
        body = []
        for family, lines in self.families.items():
            body.append(f"# TYPE {family} {self.kinds[family]}")
            body.extend(lines)
        return "\n".join(body) + "\n# EOF\n"


@pytest.fixture(scope="module")
def history_prometheus(tmp_path_factory) -> Iterator[Callable[[History], object]]:
    """Start real Prometheus servers with a History backfilled; stopped when the module ends."""
    with prometheus_servers(lambda: tmp_path_factory.mktemp("prometheus-history")) as make:
        yield lambda history: make(history.openmetrics())
