"""A classifier without predict_proba: its predicted classes are the prediction check.

A real `modelwarden profile` of a LinearSVC (no scores), two real `modelwarden serve` processes
scraped by a real Prometheus, and the analysis engine's own evaluation against the profile: the
prediction check is tested on predicted-class counts (χ²) instead of staying InsufficientData
for want of a score histogram.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import joblib
import numpy as np
import requests
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from modelwarden.analysis.reference import reference_from_profile
from modelwarden.api.driftpolicy import DriftPolicySpec, Verdict
from modelwarden.contract.profile import Profile
from modelwarden.prometheus.client import PrometheusConfig, PrometheusProvider
from modelwarden.prometheus.collect import Target, evaluate
from modelwarden.sandbox import datagen
from modelwarden.sandbox.examples import write_csv
from modelwarden.serving.model import MODEL_FILE, PROFILE_FILE

ROWS = 1200


def _predict(server, rows: np.ndarray) -> list[int]:
    predicted: list[int] = []
    for start in range(0, len(rows), 100):
        response = requests.post(f"{server.url}/v1/models/{server.name}:predict", json={"instances": rows[start:start + 100].tolist()},
                                 timeout=10)
        response.raise_for_status()
        predicted += response.json()["predictions"]
    return predicted


def test_a_classifier_without_scores_is_judged_on_its_predicted_classes(tmp_path, prometheus, start_model_server):
    x, y = datagen.classification(4000, seed=5)
    model_dir = tmp_path / "svc"
    model_dir.mkdir()
    joblib.dump(make_pipeline(StandardScaler(), LinearSVC()).fit(x, y), model_dir / MODEL_FILE)
    write_csv(tmp_path / "train.csv", x, y)
    subprocess.run([sys.executable, "-m", "modelwarden", "profile", "--data", str(tmp_path / "train.csv"), "--target", datagen.TARGET,
                    "--model", str(model_dir), "-o", str(model_dir / PROFILE_FILE)], check=True, capture_output=True)
    profile = Profile.from_json((model_dir / PROFILE_FILE).read_text())
    assert profile.prediction.score is None and profile.prediction.levels == ["0", "1"]  # no predict_proba, no scores

    model = f"svc-{uuid.uuid4().hex[:8]}"
    stable = start_model_server(model_dir, model, version="1", track="stable")
    canary = start_model_server(model_dir, model, version="2", track="canary")
    prometheus.set_targets([(stable.address, {"pod": "stable-0"}), (canary.address, {"pod": "canary-0"})])
    # Scraped before traffic arrives, as a pod is: a count is what grew after a series' first sample.
    prometheus.wait_for(f'modelwarden_predicted_class_total{{model="{model}"}}', lambda result: len(result) == 4, timeout=60)
    # stable sees data like its training data; the canary's inputs push most rows to one class.
    sent = {"stable": _predict(stable, datagen.classification(ROWS, seed=6)[0]),
            "canary": _predict(canary, datagen.features(ROWS, seed=7, drift=datagen.Drift(shift={"amount": 3.0, "merchant_risk": 2.0})))}
    prometheus.wait_for(f'sum by (track) (modelwarden_predicted_class_total{{model="{model}"}})',
                        lambda result: {r["metric"]["track"]: float(r["value"][1]) for r in result} == {"stable": ROWS, "canary": ROWS},
                        timeout=60)
    at = datetime.now(timezone.utc) + timedelta(seconds=1)

    reference = reference_from_profile(profile)
    verdicts = {}
    with PrometheusProvider(PrometheusConfig(url=prometheus.url, timeout_seconds=30)) as provider:
        for track in ("stable", "canary"):
            spec = DriftPolicySpec.model_validate({
                "targetRef": {"name": model}, "track": track, "interval": "1m", "window": "10m", "minSamples": 500,
                "reference": {"profileRef": {"configMap": {"name": "svc-profile", "key": "profile.json"}}},
                "drift": {"features": ["amount"], "predictions": True},
            })
            evaluation = evaluate(spec, Target(model=model, versions={track: "1" if track == "stable" else "2"}), provider, at,
                                  reference).report.evaluation
            verdicts[track] = {r.check: r for r in evaluation.results}
    for track, predicted in sent.items():
        check = verdicts[track]["drift/prediction"]
        assert check.samples == ROWS, check  # the exact number of predictions, one predicted class each
        assert "combined, fdr-adjusted over 2 tests" in check.message
    assert sum(sent["canary"]) > 0.8 * ROWS > sum(sent["stable"])  # what the canary's inputs did to its predictions
    assert verdicts["stable"]["drift/prediction"].verdict is Verdict.PASS
    assert verdicts["canary"]["drift/prediction"].verdict is Verdict.FAIL
