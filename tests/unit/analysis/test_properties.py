"""Arbitrary bucket vectors (zeros, resets, non-monotonic, huge counts) never raise and never
produce NaN or infinite verdict values, whatever the method."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modelwarden.analysis.judge import Observations, Reference, TrackWindow, judge
from modelwarden.analysis.histograms import BucketMatrix, bin_counts
from modelwarden.api.checks import DriftMethod
from modelwarden.api.driftpolicy import DriftPolicySpec

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
counts = st.one_of(
    st.floats(min_value=-1e12, max_value=1e15, allow_nan=False),
    st.just(0.0),
    st.just(float("nan")),
    st.just(float("inf")),
    st.integers(min_value=0, max_value=10**12).map(float),
)


@st.composite
def bucket_matrices(draw, width: int):
    features = draw(st.integers(min_value=1, max_value=4))
    rows = [draw(st.lists(counts, min_size=width, max_size=width)) for _ in range(features)]
    names = [f"f{i}" for i in range(features)]
    le = [*range(width - 1), float("inf")]
    return BucketMatrix.from_samples(
        [name for name in names for _ in le], [edge for _ in names for edge in le], [v for row in rows for v in row]
    )


@settings(max_examples=150, deadline=None)
@given(cumulative=st.lists(counts, min_size=1, max_size=30))
def test_bin_counts_are_finite_and_non_negative(cumulative):
    le = np.array([[*range(len(cumulative) - 1), np.inf]], dtype=float)
    result = bin_counts(np.array([cumulative], dtype=float), le)
    assert np.isfinite(result).all() and (result >= 0).all()


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(min_value=1, max_value=12),
    method=st.sampled_from(list(DriftMethod)),
    min_samples=st.integers(min_value=1, max_value=2000),
    data=st.data(),
)
def test_evaluation_never_raises_and_values_are_finite(width, method, min_samples, data):
    reference = data.draw(bucket_matrices(width))
    current = data.draw(bucket_matrices(width))
    spec = DriftPolicySpec.model_validate(
        {"targetRef": {"name": "m"}, "minSamples": min_samples, "reference": {"track": "stable"}, "drift": {"method": method.value}}
    )
    observations = Observations(TrackWindow(features=current, prediction=current), Reference("r", reference, reference))
    report = judge(spec, observations, NOW)
    for check in report.evaluation.results:
        for value in (check.value, check.threshold):
            assert value is None or math.isfinite(value)
    for drift in report.drift:
        assert np.isfinite(drift.statistic).all()
        if drift.p_value is not None:
            assert np.isfinite(drift.p_value).all() and ((drift.p_value >= 0) & (drift.p_value <= 1)).all()
    report.evaluation.model_dump_json()  # status-ready: serialisable as JSON
