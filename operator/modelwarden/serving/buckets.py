"""The monitor's counting: cumulative ``le`` buckets of many columns at once, and class tallies.

``ModelMonitor`` (serving.monitor) only buffers requests; when it flushes, everything pending is
counted here in a few vectorised, branch-free passes. Each column (a feature, or the prediction
value) has its own bucket edges from the profile, so a block of rows × columns is bucketed
against a rectangle of padded edges rather than one prometheus_client Histogram per column.
The ``le`` strings are the contract's (:func:`modelwarden.contract.metrics.format_le`).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from modelwarden.contract.metrics import INF_LE, format_le, level_key
from modelwarden.serving.limits import MAX_MAGNITUDE

LANE_ROWS = 255 * 8  # rows per counting pass: a byte lane of a uint64 word counts at most 255


def count_at_or_below(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``counts[c, k]`` = how many of ``values[c, :]`` are ``<= edges[c, k]`` (NaN never counts).

    These are Prometheus's cumulative ``le`` buckets. Computed without branches: one broadcast
    comparison, then the booleans summed eight at a time as the bytes of uint64 words (each byte
    lane holds at most 255, so nothing carries into the next lane). A binary search per value
    (``np.searchsorted``) looks cheaper, and is when a benchmark repeats the same values, but on
    fresh values it mispredicts a branch at almost every step: 276 vs 92 µs for 1170 rows ×
    7 columns × 20 edges, fresh values each call (benchmarks.md, "Model server").
    """
    columns, rows = values.shape
    counts = np.zeros(edges.shape, dtype=np.int64)
    for start in range(0, rows, LANE_ROWS):
        chunk = values[:, start : start + LANE_ROWS]
        n = chunk.shape[1]
        at_or_below = np.zeros((columns, edges.shape[1], -(-n // 8) * 8), dtype=bool)  # padded to whole words
        np.less_equal(chunk[:, np.newaxis, :], edges[:, :, np.newaxis], out=at_or_below[:, :, :n])
        lanes = at_or_below.view(np.uint64).sum(axis=2, dtype=np.uint64)
        counts += lanes.view(np.uint8).reshape(*edges.shape, 8).sum(axis=2, dtype=np.int64)
    return counts


class Histograms:
    """Cumulative histograms of several columns, each with its own bucket edges.

    Edges are padded with +Inf to a rectangle and a final +Inf edge is added for every column,
    so ``cumulative[c, -1]`` is the column's ``+Inf`` bucket. Non-finite values, and values beyond
    ±``MAX_MAGNITUDE`` (whose sums could overflow, serving.limits), are not counted (not in any
    bucket, nor in ``_count`` or ``_sum``): the server refuses both before they get here.
    """

    def __init__(self, edge_lists: Sequence[Sequence[float]]):
        width = max((len(edges) for edges in edge_lists), default=0) + 1
        self.padded_edges = np.full((len(edge_lists), width), np.inf)
        for i, edges in enumerate(edge_lists):
            self.padded_edges[i, : len(edges)] = edges
        self.sizes = [len(edges) for edges in edge_lists]
        self.le = [[format_le(edge) for edge in edges] + [INF_LE] for edges in edge_lists]
        self.cumulative = np.zeros(self.padded_edges.shape, dtype=np.int64)
        self.sums = np.zeros(len(edge_lists))

    def add(self, values: np.ndarray) -> None:
        """Count a float block shaped (columns, rows)."""
        finite = np.abs(values) <= MAX_MAGNITUDE  # NaN: False
        if not finite.all():
            values = np.where(finite, values, np.nan)
            self.sums += np.nansum(values, axis=1)
        else:
            self.sums += values.sum(axis=1)
        self.cumulative += count_at_or_below(values, self.padded_edges)

    def column(self, cumulative: np.ndarray, i: int) -> np.ndarray:
        """Column i's cumulative counts for its own ``le`` values (its edges, then +Inf)."""
        return np.append(cumulative[i, : self.sizes[i]], cumulative[i, -1])


class LatencyHistogram:
    """One value per request, so plain Python: a bisect and a list increment cost less than any numpy call."""

    def __init__(self, edges: Sequence[float]):
        self.edges = [float(edge) for edge in edges]
        self.le = [format_le(edge) for edge in self.edges] + [INF_LE]
        self.counts = [0] * (len(self.edges) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.edges, value)] += 1
        self.total += value

    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.counts)


class CategoricalCoder:
    """Maps categorical values to their level index (unseen levels to k, the +Inf bucket)."""

    def __init__(self, levels: Sequence[str]):
        self.index = {level: float(i) for i, level in enumerate(levels)}
        self.unseen = float(len(levels))

    def codes(self, column: Iterable[Any]) -> np.ndarray:
        return np.fromiter((self.index.get(level_key(v), self.unseen) for v in column), dtype=float)


def tally(label_arrays: Iterable[np.ndarray]) -> Counter[str]:
    """Predicted-class counts by :func:`level_key`, over many requests' label arrays.

    Arrays are joined only with others of the same dtype: joining ints with strings would turn
    1.0 into "1.0" (not "1") and True into "True" (not "true"), so a class's key would depend on
    which requests happened to be pending together. Per dtype: small non-negative integers (class
    indices) are counted with ``bincount``, other orderable labels by sorting (both much faster
    than hashing each label), anything else is hashed."""
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for labels in label_arrays:
        by_dtype.setdefault(labels.dtype, []).append(labels)
    tallies: Counter[str] = Counter()
    for arrays in by_dtype.values():
        labels = np.concatenate(arrays)
        if not labels.size:
            continue
        pairs: Iterable[tuple[Any, int]]
        if labels.dtype.kind in "iu" and 0 <= labels.min() and labels.max() < 4096:
            counts = np.bincount(labels.astype(np.intp, copy=False))
            present = np.flatnonzero(counts)
            pairs = zip(present.tolist(), counts[present].tolist())
        else:
            try:
                levels, counts = np.unique(labels, return_counts=True)
                pairs = zip(levels.tolist(), counts.tolist())
            except Exception:  # noqa: BLE001 - unorderable (None and 1, Decimal NaN, ...): hash instead
                pairs = Counter(labels.tolist()).items()
        for label, n in pairs:
            tallies[level_key(label)] += n
    return tallies
