"""Histogram decoding that reuses a shared label layout gives exactly what a fresh decoding gives."""

from __future__ import annotations

import numpy as np
import pytest

from modelwarden.prometheus.collect import InvalidData, _histograms
from modelwarden.prometheus.provider import InstantVector


class Answer:
    """Stands for the range answer a backtest's vectors share (anything weakly referenceable)."""


def labels() -> list[dict[str, str]]:
    # Out of order on purpose: decoding sorts by (feature, le).
    return [{"feature": f, "le": le} for le in ("+Inf", "0.5", "-0.5") for f in ("b", "a")]


def test_a_shared_layout_decodes_every_instant_as_a_fresh_decoding_would():
    shared = labels()
    layout = Answer()
    rng = np.random.default_rng(1)
    for _ in range(5):
        per_bucket = rng.integers(0, 50, size=(2, 3))  # feature x bucket (-0.5, 0.5, +Inf)
        cumulative = np.cumsum(per_bucket, axis=1)
        values = np.array([cumulative[1 if f == "b" else 0][{"-0.5": 0, "0.5": 1, "+Inf": 2}[x["le"]]]
                           for x, f in zip(shared, [x["feature"] for x in shared])], dtype=float)
        reused = _histograms(InstantVector(shared, values, layout=layout), name_label="feature")
        fresh = _histograms(InstantVector(labels(), values), name_label="feature")
        assert reused.names == fresh.names == ("a", "b")
        np.testing.assert_array_equal(reused.cumulative, fresh.cumulative)
        np.testing.assert_array_equal(reused.le, fresh.le)


def test_a_shared_layout_still_refuses_falling_cumulative_buckets():
    shared = labels()
    layout = Answer()
    good = np.array([10, 10, 5, 5, 1, 1], dtype=float)
    _histograms(InstantVector(shared, good, layout=layout), name_label="feature")
    falling = np.array([10, 10, 5, 50, 1, 1], dtype=float)  # a's 0.5 bucket above its +Inf
    with pytest.raises(InvalidData, match="is below"):
        _histograms(InstantVector(shared, falling, layout=layout), name_label="feature")
