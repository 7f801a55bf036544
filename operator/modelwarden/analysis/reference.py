"""Drift references from a training profile (the JSON written by `modelwarden profile`)."""

from __future__ import annotations

from typing import Any

from modelwarden.analysis.observations import Reference
from modelwarden.analysis.histograms import BucketMatrix
from modelwarden.contract.profile import Profile


def reference_from_profile(profile: Profile | dict[str, Any] | str | bytes, description: str = "profile") -> Reference:
    """The profile's per-feature histograms and its prediction-value histogram as a Reference.

    Profile counts are per bin over finite edges with a final +Inf bin — the same edges the
    model server exports as ``le``, so they align with live histograms exactly. Categorical
    features are flagged so that ks tests them with χ² (their code order means nothing). The
    profile itself rides along for the estimated_* checks (they read its score calibration).
    """
    if isinstance(profile, (str, bytes)):
        profile = Profile.from_json(profile)
    elif isinstance(profile, dict):
        profile = Profile.model_validate(profile)
    features = BucketMatrix.from_bins(
        [f.name for f in profile.features], [f.edges for f in profile.features], [f.counts for f in profile.features]
    )
    value = profile.prediction.value_distribution()
    prediction = BucketMatrix.from_bins(["prediction"], [value.edges], [value.counts]) if value else BucketMatrix.empty()
    categorical = frozenset(f.name for f in profile.features if f.kind == "categorical")
    predicted = profile.prediction
    classes = dict(zip(predicted.levels, map(float, predicted.counts))) if predicted.task == "classification" and predicted.levels else None
    return Reference(f"{description} ({profile.rows} training rows)", features, prediction, categorical, profile, classes)
