"""From Prometheus cumulative buckets to trustworthy per-bin counts, and reference alignment."""

from __future__ import annotations

import numpy as np
import pytest

from modelwarden.analysis.histograms import BucketMatrix, align, bin_counts, select_names

INF = np.inf


@pytest.mark.parametrize(
    ("cumulative", "expected"),
    [
        ([1, 3, 6, 10], [1, 2, 3, 4]),  # ordinary
        ([1, 3, -2, 10], [1, 2, 0, 7]),  # negative (extrapolated increase) clamped
        ([5, 3, 6, 6], [5, 0, 1, 0]),  # a bucket below its neighbour: running maximum
        ([0, 0, 0, 0], [0, 0, 0, 0]),
        ([np.nan, 2, INF, 4], [0, 2, 0, 2]),  # non-finite values count as zero
    ],
)
def test_bin_counts_repair(cumulative, expected):
    le = np.array([[1.0, 2.0, 3.0, INF]])
    counts = bin_counts(np.array([cumulative], dtype=float), le)
    assert counts[0].tolist() == expected
    assert (counts >= 0).all()


def test_from_samples_sorts_and_pads_any_order():
    names = ["b", "a", "b", "a", "a", "b", "b"]
    le = [INF, 1.0, 0.5, INF, 2.0, 1.0, 2.0]
    values = [10, 1, 2, 4, 3, 5, 7]
    matrix = BucketMatrix.from_samples(names, le, values)
    assert matrix.names == ("a", "b")
    np.testing.assert_array_equal(matrix.le[0], [1.0, 2.0, INF, np.nan])
    np.testing.assert_array_equal(matrix.le[1], [0.5, 1.0, 2.0, INF])
    assert matrix.cumulative.tolist() == [[1, 3, 4, 0], [2, 5, 7, 10]]
    assert matrix.width.tolist() == [3, 4]


def test_from_bins_matches_from_samples():
    from_bins = BucketMatrix.from_bins(["x"], [[0.0, 1.0]], [[3, 4, 5]])
    from_samples = BucketMatrix.from_samples(["x"] * 3, [0.0, 1.0, INF], [3, 7, 12])
    np.testing.assert_array_equal(from_bins.le, from_samples.le)
    np.testing.assert_array_equal(from_bins.cumulative, from_samples.cumulative)


def test_align_flags_different_edges_and_zeroes_them():
    reference = BucketMatrix.from_bins(["same", "moved"], [[0.0, 1.0], [0.0, 1.0]], [[1, 2, 3], [1, 2, 3]])
    current = BucketMatrix.from_bins(["same", "moved"], [[0.0, 1.0], [0.0, 1.5]], [[3, 2, 1], [3, 2, 1]])
    aligned = align(reference, current, ["same", "moved"])
    assert aligned.mismatched.tolist() == [False, True]
    assert aligned.reference[1].sum() == aligned.current[1].sum() == 0
    assert aligned.current_total.tolist() == [6, 0]


def test_align_fills_a_missing_side_with_zeros_without_mismatch():
    reference = BucketMatrix.from_bins(["a", "b"], [[0.0], [0.0, 1.0, 2.0]], [[1, 2], [1, 1, 1, 1]])
    current = BucketMatrix.from_bins(["a"], [[0.0]], [[5, 5]])
    aligned = align(reference, current, ["a", "b", "c"])
    assert aligned.mismatched.tolist() == [False, False, False]
    assert aligned.current_total.tolist() == [10, 0, 0]
    assert aligned.reference_total.tolist() == [3, 4, 0]
    assert aligned.le.shape == (3, 4)


def test_select_names():
    available = ["age", "income", "zip", "age_bucket"]
    assert select_names(available, ["*"]) == ["age", "age_bucket", "income", "zip"]
    assert select_names(available, ["age*", "zip"]) == ["age", "age_bucket", "zip"]
    assert select_names(available, ["gone"]) == ["gone"]  # kept: shows up as InsufficientData
