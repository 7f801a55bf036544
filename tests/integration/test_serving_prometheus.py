"""Two real model-server processes (stable, canary) scraped by a real Prometheus.

Everything sent is known, so every series must be *exactly* what numpy computes from the sent
data: prediction counts, latency observations, per-feature cumulative buckets, classes, the
confusion matrix, accuracy/precision through the PromQL documented in docs/metrics.md, errors
and outliers.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import requests

from modelwarden.sandbox import datagen
from modelwarden.serving.model import load_runner
from modelwarden.contract.profile import Profile


@dataclass
class Sent:
    """What one track received: rows, true labels, model answers, request count, feedback pairs."""

    rows: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    requests: int = 0
    feedback: list[tuple[int, int]] = field(default_factory=list)


def predict_v1(server, rows, labels, sent: Sent, *, named: bool = False, request_id: str | None = None) -> None:
    instances = [dict(zip(datagen.FEATURE_NAMES, row)) for row in rows] if named else rows
    headers = {"X-Request-Id": request_id} if request_id else {}
    response = requests.post(
        f"{server.url}/v1/models/{server.name}:predict", json={"instances": instances}, headers=headers, timeout=10
    )
    response.raise_for_status()
    sent.rows += rows
    sent.labels += labels
    sent.predicted += response.json()["predictions"]
    sent.requests += 1


def predict_v2(server, rows, labels, sent: Sent) -> None:
    tensor = {
        "name": "input",
        "datatype": "FP64",
        "shape": [len(rows), len(rows[0])],
        "data": [v for row in rows for v in row],
    }
    response = requests.post(f"{server.url}/v2/models/{server.name}/infer", json={"inputs": [tensor]}, timeout=10)
    response.raise_for_status()
    sent.rows += rows
    sent.labels += labels
    sent.predicted += response.json()["outputs"][0]["data"]
    sent.requests += 1


def send_feedback(server, items: list[dict]) -> None:
    response = requests.post(f"{server.url}/v1/models/{server.name}/feedback", json=items, timeout=10)
    assert response.status_code == 200, response.text


def by_labels(result: list[dict], *names: str) -> dict:
    return {tuple(r["metric"].get(n, "") for n in names): float(r["value"][1]) for r in result}


def test_two_tracks_scraped_by_prometheus_match_what_was_sent(prometheus, serving_examples, start_model_server):
    example = serving_examples["classifier"]
    profile = Profile.from_json(example.profile.read_text())
    model = f"fraud-{uuid.uuid4().hex[:8]}"
    servers = {
        "stable": start_model_server(
            example.directory, model, version="1", track="stable", extra_args=("--prediction-log", "off")
        ),
        "canary": start_model_server(
            example.directory, model, version="2", track="canary", extra_args=("--prediction-log", "off")
        ),
    }
    prometheus.set_targets([(s.address, {"pod": f"{track}-0"}) for track, s in servers.items()])
    sent = {"stable": Sent(), "canary": Sent()}
    runner, _ = load_runner(str(example.directory))

    # stable: clean data; 60 single-row V1 requests (feedback by request id) + 6 V2 batches of 10 (stateless feedback)
    x, y = datagen.classification(120, seed=31)
    for i in range(60):
        predict_v1(servers["stable"], x[i : i + 1].tolist(), y[i : i + 1].tolist(), sent["stable"], request_id=f"s-{i}")
    for start in range(60, 120, 10):
        predict_v2(servers["stable"], x[start : start + 10].tolist(), y[start : start + 10].tolist(), sent["stable"])
    # canary: drifted features and noisy labels, 9 V1 batches of 10 named rows, and three bad requests
    x, y = datagen.classification(
        90, seed=32, drift=datagen.Drift(shift={"amount": 2.0, "merchant_risk": -1.5}, label_noise=0.3)
    )
    for start in range(0, 90, 10):
        predict_v1(
            servers["canary"],
            x[start : start + 10].tolist(),
            y[start : start + 10].tolist(),
            sent["canary"],
            named=True,
        )
    canary_url = f"{servers['canary'].url}/v1/models/{model}:predict"
    for body in (b"{oops", b"{oops", b'{"instances": [[1, 2, 3, 4, 5, NaN]]}'):
        assert requests.post(canary_url, data=body, timeout=10).status_code == 400

    # feedback last, so seeing all of it in Prometheus means the scrape saw everything else too
    stable = sent["stable"]
    send_feedback(servers["stable"], [{"request_id": f"s-{i}", "actual": stable.labels[i]} for i in range(60)])
    send_feedback(
        servers["stable"], [{"predicted": p, "actual": a} for p, a in zip(stable.predicted[60:], stable.labels[60:])]
    )
    stable.feedback = list(zip(stable.predicted, stable.labels))
    canary = sent["canary"]
    canary.feedback = list(zip(canary.predicted[:80], canary.labels[:80]))  # feedback for 80 of 90 predictions
    send_feedback(servers["canary"], [{"predicted": p, "actual": a} for p, a in canary.feedback])

    selector = f'model="{model}"'
    prometheus.wait_for(
        f"sum by (track) (modelwarden_feedback_total{{{selector}}})",
        lambda result: by_labels(result, "track") == {("stable",): 120.0, ("canary",): 80.0},
        timeout=60,
    )

    assert by_labels(prometheus.query(f"modelwarden_predictions_total{{{selector}}}"), "track", "version") == {
        ("stable", "1"): 120.0,
        ("canary", "2"): 90.0,
    }
    assert by_labels(prometheus.query(f"modelwarden_inference_latency_seconds_count{{{selector}}}"), "track") == {
        ("stable",): 66.0,
        ("canary",): 9.0,
    }
    assert by_labels(prometheus.query(f"modelwarden_prediction_value_count{{{selector}}}"), "track") == {
        ("stable",): 120.0,
        ("canary",): 90.0,
    }

    for track, data in sent.items():
        rows = np.array(data.rows)
        labels = f'{selector},track="{track}"'

        # per-feature cumulative buckets: le strings are exactly the profile edges
        buckets = by_labels(prometheus.query(f"modelwarden_feature_value_bucket{{{labels}}}"), "feature", "le")
        expected = {}
        for j, feature in enumerate(profile.features):
            for edge in [*feature.edges, math.inf]:
                expected[(feature.name, repr(edge) if math.isfinite(edge) else "+Inf")] = float(
                    (rows[:, j] <= edge).sum()
                )
        assert buckets == expected

        classes = by_labels(prometheus.query(f"modelwarden_predicted_class_total{{{labels}}}"), "class")
        assert classes == {(str(c),): float(data.predicted.count(c)) for c in (0, 1)}

        confusion = by_labels(prometheus.query(f"modelwarden_feedback_total{{{labels}}}"), "predicted", "actual")
        counts = Counter(data.feedback)
        assert confusion == {(str(p), str(a)): float(counts[(p, a)]) for p in (0, 1) for a in (0, 1)}

        feedback = f"modelwarden_feedback_total{{{labels}}}"
        correct = f'(label_replace({feedback}, "k", "$1", "predicted", "(.*)") and label_replace({feedback}, "k", "$1", "actual", "(.*)"))'
        accuracy = float(prometheus.query(f"sum({correct}) / sum({feedback})")[0]["value"][1])
        assert accuracy == sum(p == a for p, a in data.feedback) / len(data.feedback)
        precision = by_labels(
            prometheus.query(f"sum by (predicted) ({correct}) / sum by (predicted) ({feedback})"), "predicted"
        )
        for c in (0, 1):
            predicted_c = [a for p, a in data.feedback if p == c]
            assert precision[(str(c),)] == sum(a == c for a in predicted_c) / len(predicted_c)

        scores = runner.predict(rows).scores
        means = np.array([f.mean for f in profile.features] + [profile.prediction.score.mean])
        stds = np.array([f.std for f in profile.features] + [profile.prediction.score.std])
        outliers = (np.abs(np.column_stack((rows, scores)) - means) > profile.z_score * stds).any(axis=1).sum()
        assert by_labels(prometheus.query(f"modelwarden_prediction_outliers_total{{{labels}}}"), "track") == {
            (track,): float(outliers)
        }

    assert by_labels(prometheus.query(f"modelwarden_prediction_outliers_total{{{selector}}}"), "track")[("canary",)] > 0
    errors = by_labels(prometheus.query(f"modelwarden_prediction_errors_total{{{selector}}} > 0"), "track", "reason")
    assert errors == {("canary", "malformed_json"): 2.0, ("canary", "non_finite"): 1.0}
    # p99 latency is computable from the exported histogram
    p99 = prometheus.query(
        f"histogram_quantile(0.99, sum by (track, le) (modelwarden_inference_latency_seconds_bucket{{{selector}}}))"
    )
    assert {r["metric"]["track"] for r in p99} == {"stable", "canary"} and all(
        0 < float(r["value"][1]) < 1 for r in p99
    )
