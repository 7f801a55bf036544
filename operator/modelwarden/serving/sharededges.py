"""A profile counted on another profile's bucket edges (`modelwarden profile --edges-from`).

A retrained model's server histograms its features and prediction values on its own profile's
edges. A DriftPolicy comparing it with stable (`reference: {track: stable}`) can only compare bins
that line up: different quantile edges are an Error (BucketEdgesDiffer), and the operator refuses
such a candidate. Counting the new training data on the stable's edges keeps the two comparable,
bin for bin, with no approximation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelwarden.contract.metrics import level_key
from modelwarden.contract.profile import Distribution, Profile
from modelwarden.serving.model import load_runner
from modelwarden.serving.profile import ProfileError, model_input, parse_column, read_csv, score_calibration


def on_edges_of(profile: Profile, other: Profile, data: Path, model: str | None, trusted_skops_types: Sequence[str] = ()) -> Profile:
    """`profile` (built from `data`) with every numeric feature and the prediction values that `other`
    also has counted on `other`'s edges. A feature or prediction `other` lacks keeps its own edges."""
    raw = read_csv(data)
    edges = {f.name: f.edges for f in other.features if f.kind == "numeric"}
    features = [_recount(f, parse_column(f.name, raw[f.name], False), edges[f.name])
                if f.kind == "numeric" and f.name in edges else f for f in profile.features]
    prediction, theirs = profile.prediction, other.prediction.value_distribution()
    ours = prediction.value_distribution()
    if ours is not None and theirs is not None and model is not None and prediction.task == other.prediction.task:
        runner, _ = load_runner(model, trusted_skops_types)
        names = [f.name for f in profile.features]
        outputs = runner.predict(model_input([parse_column(n, raw[n], f.kind == "categorical") for n, f in zip(names, profile.features)]))
        if prediction.task == "regression":
            prediction = prediction.model_copy(update=_recount(prediction, np.asarray(outputs.predicted, float), theirs.edges).model_dump(
                include={"edges", "counts"}))
        elif outputs.scores is not None:
            threshold = prediction.calibration.threshold if prediction.calibration else None
            if threshold is not None and threshold not in theirs.edges:
                raise ProfileError(f"--edges-from: its score edges lack this model's decision threshold {threshold:g}")
            score = _recount(ours, np.asarray(outputs.scores, float), theirs.edges)
            calibration = None
            if threshold is not None:
                labels = parse_column(profile.target, raw[profile.target], categorical=True)
                positive = np.asarray([level_key(label) == prediction.positive_class for label in labels], dtype=bool)
                calibration = score_calibration(np.asarray(outputs.scores, float), positive, score.edges, threshold)
            prediction = prediction.model_copy(update={"score": score, "calibration": calibration})
    return profile.model_copy(update={"features": features, "prediction": prediction})


def _recount(distribution: Distribution, values: np.ndarray, edges: Sequence[float]) -> Distribution:
    bounds = np.asarray(edges, dtype=float)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=bounds.size + 1)
    return distribution.model_copy(update={"edges": list(edges), "counts": counts.tolist()})
