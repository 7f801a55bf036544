"""Label-free performance estimates end to end: a real scikit-learn model, its profile from the real
`modelwarden profile`, its score histograms in a real Prometheus, judged by the real
`modelwarden evaluate` — against the accuracy the test knows from the labels.

Data come from a logistic model, p(y = 1 | x) = σ(x·w + b), so a LogisticRegression fitted on
them is calibrated. Each of 20 ten-minute windows draws its inputs from a different distribution
(the mean moves along w and the spread changes: covariate shift, from mostly negative to mostly
positive, from easy to hard), while p(y | x) stays the model's: the setting in which the
calibration, and so the estimate, holds. The model scores every window's rows; the bucket counts
of those scores, on the profile's edges (as `modelwarden serve` would export them), become the
window's `modelwarden_prediction_value` history. An overconfident copy of the model (its logits
tripled: the same decisions, scores pushed to 0 and 1) is refused.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
from sklearn.linear_model import LogisticRegression

from modelwarden.analysis.estimated import ScoreCalibration
from modelwarden.contract.profile import Profile

from tests.integration.evaluate_history import History, hours_ago_aligned

MODELWARDEN = str(Path(sys.executable).with_name("modelwarden"))
WEIGHTS = np.array([1.5, -1.0, 0.8])
BIAS = -0.2
WINDOWS = 20
STEPS_PER_WINDOW = 10  # one-minute steps: ten-minute windows
ROWS_PER_WINDOW = 10_000
TOLERANCE = 0.02  # the issue's ±2 points
METRICS = ("accuracy", "precision", "recall", "f1")
POLICY = """
apiVersion: modelwarden.io/v1alpha1
kind: DriftPolicy
metadata: {name: churn-estimated, namespace: ml}
spec:
  targetRef: {name: churn}
  interval: 1m
  window: 10m
  minSamples: 1000
  reference:
    profileRef: {configMap: {name: churn-profile, key: profile.json}}
  performance:
    - {metric: estimated_accuracy, min: 0.05}
    - {metric: estimated_precision, min: 0.05}
    - {metric: estimated_recall, min: 0.05}
    - {metric: estimated_f1, min: 0.05}
"""


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def draw(rng: np.random.Generator, n: int, shift: float = 0.0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs moved ``shift`` along w and scaled by ``spread``; labels from the unchanged p(y | x)."""
    x = shift * WEIGHTS / np.linalg.norm(WEIGHTS) + spread * rng.standard_normal((n, WEIGHTS.size))
    return x, rng.random(n) < sigmoid(x @ WEIGHTS + BIAS)


def profile_of(model_path: Path, data: Path, output: Path) -> tuple[dict, str]:
    done = subprocess.run(
        [MODELWARDEN, "profile", "--data", str(data), "--target", "label", "--model", str(model_path), "-o", str(output)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(output.read_text()), done.stderr


def truth(scores: np.ndarray, labels: np.ndarray) -> dict[str, tuple[float, int]]:
    """Each metric from the labels, with the rows behind it (its denominator)."""
    predicted = scores > 0.5
    tp, fp = int(np.sum(predicted & labels)), int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    return {"accuracy": (float(np.mean(predicted == labels)), scores.size), "precision": (tp / (tp + fp), tp + fp),
            "recall": (tp / (tp + fn), tp + fn), "f1": (2 * tp / (2 * tp + fp + fn), min(tp + fp, tp + fn))}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, history_prometheus):
    directory = tmp_path_factory.mktemp("estimated")
    rng = np.random.default_rng(19)
    x, y = draw(rng, 20_000)
    data = directory / "train.csv"
    np.savetxt(data, np.column_stack([x, y.astype(int)]), delimiter=",", fmt=["%.6f"] * 3 + ["%d"],
               header="x0,x1,x2,label", comments="")
    calibrated = LogisticRegression().fit(x, y.astype(int))
    overconfident = copy.deepcopy(calibrated)
    overconfident.coef_ = calibrated.coef_ * 3
    overconfident.intercept_ = calibrated.intercept_ * 3
    models = {"calibrated": calibrated, "overconfident": overconfident}
    profiles, notes = {}, {}
    for name, model in models.items():
        joblib.dump(model, directory / f"{name}.joblib")
        profiles[name], notes[name] = profile_of(directory / f"{name}.joblib", data, directory / f"{name}.json")

    history = History(hours_ago_aligned(4), WINDOWS * STEPS_PER_WINDOW, seed=19)
    shifts = np.linspace(-1.5, 1.5, WINDOWS)
    spreads = np.resize([0.5, 1.0, 1.5, 2.5], WINDOWS)
    truths = []
    step_counts = {name: [] for name in models}
    for shift, spread in zip(shifts, spreads):
        rows, labels = draw(rng, ROWS_PER_WINDOW, shift, spread)
        for name, model in models.items():
            scores = model.predict_proba(rows)[:, 1]
            edges = np.asarray(profiles[name]["prediction"]["score"]["edges"])
            for part in np.array_split(scores, STEPS_PER_WINDOW):  # the window's rows over its ten steps
                step_counts[name].append(np.bincount(np.searchsorted(edges, part, side="left"), minlength=edges.size + 1))
            if name == "calibrated":
                truths.append({**truth(scores, labels), "direct": (float(np.where(scores > 0.5, scores, 1 - scores).mean()), 0)})
    for name in models:
        labels = {"model": f"churn-{name}", "version": "1", "track": "stable"}
        edges = profiles[name]["prediction"]["score"]["edges"]
        cumulative_over_le = np.cumsum(np.array(step_counts[name]), axis=1)
        for j, edge in enumerate([*edges, np.inf]):
            le = "+Inf" if edge == np.inf else repr(float(edge))  # as prometheus_client spells it
            history.counter("modelwarden_prediction_value", "modelwarden_prediction_value_bucket", {**labels, "le": le},
                            cumulative_over_le[:, j], "histogram")
        history.counter("modelwarden_predictions", "modelwarden_predictions_total", labels, ROWS_PER_WINDOW // STEPS_PER_WINDOW)
    return {"server": history_prometheus(history), "history": history, "directory": directory, "profiles": profiles,
            "notes": notes, "truths": truths}


def evaluate(scenario, window: int, model: str, *args: str) -> tuple[int, dict, str]:
    manifest = scenario["directory"] / "policy.yaml"
    manifest.write_text(POLICY)
    at = scenario["history"].start + 60 * STEPS_PER_WINDOW * (window + 1)
    done = subprocess.run(
        [MODELWARDEN, "evaluate", "-f", str(manifest), "--prometheus", scenario["server"].url, "--model", f"churn-{model}",
         "--at", str(at_rfc3339(at)), "-o", "json", *args],
        capture_output=True, text=True, timeout=120,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def at_rfc3339(timestamp: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def test_the_profile_records_the_threshold_and_a_calibration(scenario):
    prediction = scenario["profiles"]["calibrated"]["prediction"]
    calibration = prediction["calibration"]
    assert 0.5 in prediction["score"]["edges"] and calibration["threshold"] == 0.5 and calibration["rows"] == 20_000
    assert abs(calibration["expectedAccuracy"] - calibration["realisedAccuracy"]) < 0.01
    assert "warning" not in scenario["notes"]["calibrated"]
    overconfident = scenario["profiles"]["overconfident"]["prediction"]["calibration"]
    assert overconfident["expectedAccuracy"] - overconfident["realisedAccuracy"] > 0.05
    assert "warning: the scores are not calibrated within 0.02" in scenario["notes"]["overconfident"]


def test_estimates_are_within_two_points_of_the_labelled_truth_in_every_window(scenario):
    """Accuracy within ±2 points in all 20 windows. Precision, recall and F1 too wherever the
    labelled value rests on at least 1000 rows: in the most negative window only about ten rows
    are predicted positive, and a precision of ten rows is noise whatever estimates it."""
    profile = str(scenario["directory"] / "calibrated.json")
    errors: dict[str, list[float]] = {metric: [] for metric in METRICS}
    accuracies, bucket_bias = [], []
    for window, known in enumerate(scenario["truths"]):
        status, document, stderr = evaluate(scenario, window, "calibrated", "--profile", profile)
        assert status in (0, 1), (status, stderr, document)  # a verdict either way (a recall of 0.01 fails min 0.05)
        results = {r["check"]: r for r in document["evaluation"]["results"]}
        for metric in METRICS:
            result = results[f"performance/estimated_{metric}"]
            assert result["verdict"] in ("Pass", "Fail") and result["samples"] == ROWS_PER_WINDOW, result
            value, rows = known[metric]
            if rows >= 1000:
                errors[metric].append(result["value"] - value)
        accuracies.append(known["accuracy"][0])
        # the buckets' share of the error: the estimate against the per-row CBPE sum on the same scores
        bucket_bias.append(results["performance/estimated_accuracy"]["value"] - known["direct"][0])
    worst = {metric: max(abs(e) for e in values) for metric, values in errors.items()}
    print(f"\ntrue accuracy per window: {np.round(accuracies, 3).tolist()}")
    print("max |estimate − truth|: " + ", ".join(f"{m} {w:.4f} ({len(errors[m])} windows)" for m, w in worst.items()))
    print(f"accuracy estimate − per-row CBPE on the same scores: {np.round(bucket_bias, 4).tolist()}")
    assert len(errors["accuracy"]) == WINDOWS and min(len(e) for e in errors.values()) >= WINDOWS // 2
    assert max(accuracies) - min(accuracies) > 0.2  # the windows really differ
    assert all(value <= TOLERANCE for value in worst.values()), worst


def test_an_overconfident_model_is_refused_with_exit_status_2(scenario):
    profile = str(scenario["directory"] / "overconfident.json")
    status, document, stderr = evaluate(scenario, 5, "overconfident", "--profile", profile)
    assert status == 2, (status, stderr)
    assert document["evaluation"]["verdict"] == "Error"
    for result in document["evaluation"]["results"]:
        assert result["verdict"] == "Error" and "not calibrated enough" in result["message"], result
    accuracy = next(r for r in document["evaluation"]["results"] if r["check"] == "performance/estimated_accuracy")
    calibration = scenario["profiles"]["overconfident"]["prediction"]["calibration"]
    assert f"accuracy {calibration['expectedAccuracy']:.4f} from the scores" in accuracy["message"]


def test_without_the_profile_the_checks_are_errors_not_verdicts(scenario):
    status, document, _ = evaluate(scenario, 5, "calibrated")
    assert status == 2 and document["evaluation"]["verdict"] == "Error"
    assert all("reference profile was not provided" in r["message"] for r in document["evaluation"]["results"])


def test_one_window_through_a_real_model_server_scraped_by_prometheus(scenario, prometheus, start_model_server, tmp_path):
    """`modelwarden serve` with the calibrated model and its profile exports the score histogram on
    the profile's edges (the threshold among them); Prometheus scrapes it; `modelwarden evaluate`
    gives exactly the estimate computed here from the scores, and it is within 2 points of the truth."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(scenario["directory"] / "calibrated.joblib", served / "model.joblib")
    shutil.copy(scenario["directory"] / "calibrated.json", served / "profile.json")
    model = f"churn-{uuid.uuid4().hex[:8]}"
    server = start_model_server(served, model, version="1", track="stable", extra_args=("--prediction-log", "off"))
    prometheus.set_targets([(server.address, {"pod": "stable-0"})])
    count = f'sum(modelwarden_prediction_value_count{{model="{model}"}})'
    prometheus.wait_for(count, timeout=60)  # scraped at 0 before any traffic: the window's increase starts there
    rows, labels = draw(np.random.default_rng(23), 3000, shift=0.5, spread=1.2)
    predicted = []
    for batch in np.array_split(rows, 30):
        response = requests.post(f"{server.url}/v1/models/{model}:predict", json={"instances": batch.tolist()}, timeout=10)
        response.raise_for_status()
        predicted += response.json()["predictions"]
    prometheus.wait_for(count, lambda result: bool(result) and float(result[0]["value"][1]) == 3000, timeout=60)

    manifest = tmp_path / "policy.yaml"
    manifest.write_text(POLICY)
    done = subprocess.run(
        [MODELWARDEN, "evaluate", "-f", str(manifest), "--prometheus", prometheus.url, "--model", model,
         "--profile", str(served / "profile.json"), "-o", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["check"]: r for r in json.loads(done.stdout)["evaluation"]["results"]}

    scores = joblib.load(served / "model.joblib").predict_proba(rows)[:, 1]
    assert predicted == (scores > 0.5).astype(int).tolist()  # the server predicts at the profile's threshold
    calibration = ScoreCalibration.from_profile(Profile.from_json((served / "profile.json").read_text()))
    local = calibration.estimate(np.bincount(np.searchsorted(calibration.edges, scores, side="left"),
                                             minlength=calibration.edges.size + 1))
    known = truth(scores, labels)
    print("\nserved window, estimate vs truth: " + ", ".join(
        f"{m} {results[f'performance/estimated_{m}']['value']:.4f}/{known[m][0]:.4f}" for m in METRICS))
    for metric in METRICS:
        value = results[f"performance/estimated_{metric}"]["value"]
        # increase() over a window longer than the series' life scales every bucket alike; ratios stay exact
        assert value == pytest.approx(local.metric(metric), rel=1e-9), metric
        assert abs(value - known[metric][0]) <= TOLERANCE, (metric, value, known[metric])
