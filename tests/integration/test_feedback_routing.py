"""Ground truth reaches the track that predicted, through a weighted route, after restarts.

Real `modelwarden serve` processes for stable (v1), canary (v2) and shadow (v3) share a feedback
key; a real router process (tests/router.py) sends 80/20 of all traffic, predictions and feedback
alike, to stable/canary and mirrors everything to the shadow, as a mesh would. Feedback comes
back with each prediction's token after every server was restarted (no replica remembers any
request), and mostly reaches a different track than the one that predicted. A real Prometheus
scrapes all servers (plus one of the same model in another namespace), and the confusion counts
it holds per track equal, exactly, the ones this test computes from its own labels.
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys

import pytest
import requests

from modelwarden.prometheus import queries
from modelwarden.sandbox import datagen
from modelwarden.sandbox.examples import train_example
from modelwarden.sandbox.processes import free_port, terminate, wait_until_ready
from modelwarden.serving.tokens import FeedbackTokens, Prediction
from tests.validation import ROOT

MODEL = "fraud"
KEYS = ["current-key-0123456789abcdef", "previous-key-0123456789abcdef"]
HEADER = "X-Modelwarden-Feedback-Token"


def feedback_total(prometheus, track: str, namespace: str) -> dict[tuple[str, str], int]:
    """The built-in query's matchers (model, track, namespace label) over the raw counters: exact counts."""
    selector = queries.Selector(MODEL, track, namespace=namespace, namespace_label="namespace")
    found = prometheus.query(f"sum by (predicted, actual) ({queries.FEEDBACK}{{{selector.matchers()}}})")
    return {(s["metric"]["predicted"], s["metric"]["actual"]): int(float(s["value"][1])) for s in found if float(s["value"][1])}


def errors_by_reason(server) -> dict[str, int]:
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("modelwarden_prediction_errors_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = int(float(line.rsplit(" ", 1)[1]))
    return counts


@pytest.fixture
def router(tmp_path):
    started: list[subprocess.Popen[bytes]] = []

    def start(routes: dict[str, int], mirror: str | None) -> str:
        port = free_port()
        command = [sys.executable, str(ROOT / "tests" / "router.py"), "--port", str(port), "--seed", "5",
                   *[arg for url, weight in routes.items() for arg in ("--route", f"{url}={weight}")],
                   *(["--mirror", mirror] if mirror else [])]
        log = (tmp_path / "router.log").open("ab")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        # Any answer (a 404 from a backend) means the router is up.
        wait_until_ready(process, f"{url}/v2/health/ready", "router", lambda: (tmp_path / "router.log").read_text(), 30)
        return url

    yield start
    for process in started:
        terminate(process)


@pytest.mark.timeout(300)
def test_routed_delayed_feedback_counts_exactly_under_the_predicting_track(
    prometheus, serving_examples, start_model_server, router, tmp_path,
):
    key_file = tmp_path / "feedback-keys"
    key_file.write_text("\n".join(KEYS) + "\n")
    stable_model = serving_examples["classifier"]
    canary_model = train_example("classifier", tmp_path / "v2", seed=8)  # a different model: different mistakes
    canary_model.profile.write_text(stable_model.profile.read_text())
    token_args = ("--feedback-key-file", str(key_file), "--prediction-log", "off", "--namespace", "ml")
    servers = {
        "stable": start_model_server(stable_model.model, MODEL, version="1", track="stable", extra_args=token_args),
        "canary": start_model_server(canary_model.model, MODEL, version="2", track="canary", extra_args=token_args),
        "shadow": start_model_server(canary_model.model, MODEL, version="3", track="shadow", extra_args=token_args),
    }
    # The same model name in another namespace, with its own feedback: never mixed in.
    staging = start_model_server(stable_model.model, MODEL, version="1", track="canary",
                                 extra_args=(*token_args[:-1], "staging"))
    prometheus.set_targets([*((s.address, {"namespace": "ml", "pod": f"{t}-0"}) for t, s in servers.items()),
                            (staging.address, {"namespace": "staging", "pod": "staging-0"})])
    url = router({servers["stable"].url: 80, servers["canary"].url: 20}, mirror=servers["shadow"].url)

    # Predictions through the route; the test keeps its own labels and who answered.
    x, y = datagen.classification(600, seed=21)
    rng = random.Random(3)
    sent: list[tuple[str, str, list, list]] = []  # (token, track, predicted, actual)
    row = 0
    while row < len(x):
        size = rng.choice((1, 1, 2, 3))
        rows, labels = x[row:row + size].tolist(), y[row:row + size].tolist()
        row += size
        if rng.random() < 0.5:
            answer = requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": rows}, timeout=10)
            predicted = answer.json()["predictions"]
            assert answer.json()["feedbackToken"] == answer.headers[HEADER]
        else:
            doc = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [len(rows), len(rows[0])], "data": rows}]}
            answer = requests.post(f"{url}/v2/models/{MODEL}/infer", json=doc, timeout=10)
            predicted = answer.json()["outputs"][0]["data"]
            assert answer.json()["parameters"]["feedbackToken"] == answer.headers[HEADER]
        assert answer.status_code == 200, answer.text
        sent.append((answer.headers[HEADER], answer.headers["X-Model-Track"], predicted, labels))
    tracks = collections.Counter(track for _, track, _, _ in sent)
    assert set(tracks) == {"stable", "canary"}, tracks  # the shadow's answers never reach a client

    # Every server restarts: no replica remembers a single request. Prometheus has seen each new
    # process (its predictions counter back at 0) before any feedback arrives.
    for server in servers.values():
        server.stop()
        server.start()
    prometheus.wait_for('modelwarden_predictions_total{namespace="ml"}', lambda result: len(result) == 3 and all(
        float(sample["value"][1]) == 0 for sample in result), timeout=60)

    # Feedback through the same route (so mostly to the other track), in batches of one to four.
    index = 0
    while index < len(sent):
        batch = sent[index:index + rng.choice((1, 2, 4))]
        index += len(batch)
        items = [{"token": token, "actual": actual if len(actual) > 1 or rng.random() < 0.5 else actual[0]}
                 for token, _, _, actual in batch]
        answer = requests.post(f"{url}/v1/models/{MODEL}/feedback", json=items if len(items) > 1 else items[0], timeout=10)
        assert answer.status_code == 200 and answer.json()["accepted"] == sum(len(a) for *_, a in batch), answer.text

    # Staging's own feedback, for its own predictions; its tokens do not count in ml (same key).
    staged = requests.post(f"{staging.url}/v1/models/{MODEL}:predict", json={"instances": x[:5].tolist()}, timeout=10)
    crossed = requests.post(f"{url}/v1/models/{MODEL}/feedback", timeout=10,
                            json={"token": staged.headers[HEADER], "actual": y[:5].tolist()})
    assert crossed.status_code == 403 and "namespace 'staging'" in crossed.json()["error"]
    assert requests.post(f"{staging.url}/v1/models/{MODEL}/feedback", timeout=10,
                         json={"token": staged.headers[HEADER], "actual": y[:5].tolist()}).json() == {"accepted": 5}

    truth: dict[str, collections.Counter] = {"stable": collections.Counter(), "canary": collections.Counter()}
    for _, track, predicted, actual in sent:
        truth[track].update((str(p), str(a)) for p, a in zip(predicted, actual))
    total = sum(sum(c.values()) for c in truth.values())
    # Wait until Prometheus has scraped every count (counts only grow), then compare exactly.
    prometheus.wait_for(f'sum({queries.FEEDBACK}{{model="{MODEL}",namespace="ml"}})',
                        lambda result: result and int(float(result[0]["value"][1])) == total, timeout=60)
    for track in ("stable", "canary"):
        assert feedback_total(prometheus, track, "ml") == dict(truth[track]), track
        counted = feedback_total(prometheus, track, "ml")
        accuracy = sum(n for (p, a), n in counted.items() if p == a) / sum(counted.values())
        true_accuracy = sum(n for (p, a), n in truth[track].items() if p == a) / sum(truth[track].values())
        assert accuracy == true_accuracy
    # Mirrored feedback was verified by the shadow, never counted: nothing under any track there.
    shadow_counts = prometheus.query(f'sum({queries.FEEDBACK}{{model="{MODEL}",pod="shadow-0"}})')
    assert int(float(shadow_counts[0]["value"][1])) == 0
    assert feedback_total(prometheus, "shadow", "ml") == {}
    # The other namespace's canary is only its own five.
    assert sum(feedback_total(prometheus, "canary", "staging").values()) == 5
    # What the operator's accuracy check reads is increase() over its window, which takes a
    # series' first sample as its start: every feedback series, also those a server started for
    # another track's tokens, was first scraped at 0, so no count is lost to increase().
    first_samples = prometheus.query(f'min_over_time({queries.FEEDBACK}{{model="{MODEL}",namespace="ml"}}[10m])')
    assert first_samples and {float(s["value"][1]) for s in first_samples} == {0.0}, [
        (sorted(s["metric"].items()), s["value"][1]) for s in first_samples if float(s["value"][1])]
    assert {s["metric"]["track"] for s in first_samples} == {"stable", "canary", "shadow"}  # the shadow's own, at 0


@pytest.mark.timeout(120)
def test_bad_tokens_are_refused_with_a_reason_counted_and_change_nothing(serving_examples, start_model_server, tmp_path):
    key_file = tmp_path / "feedback-keys"
    key_file.write_text(KEYS[0] + "\n")
    model = serving_examples["classifier"]
    server = start_model_server(model.model, MODEL, version="1", track="stable",
                                extra_args=("--feedback-key-file", str(key_file), "--prediction-log", "off"))
    rows = datagen.classification(3, seed=4)[0].tolist()
    good = requests.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": rows}, timeout=10).headers[HEADER]
    other_key = FeedbackTokens([b"an-attackers-key-0123456789"]).issue(Prediction(MODEL, "stable", "1", (1, 1, 1)))
    other_model = FeedbackTokens([KEYS[0].encode()]).issue(Prediction("churn", "stable", "1", (1, 1, 1)))
    expired = FeedbackTokens([KEYS[0].encode()], max_age_seconds=1)
    cases = {
        "forged": (other_key, "invalid_token", 403),
        "tampered": (good[:10] + ("A" if good[10] != "A" else "B") + good[11:], "invalid_token", 403),
        "truncated": (good[:-6], "invalid_token", 403),
        "other model": (other_model, "wrong_model_token", 403),
        "not a string": (17, "invalid_payload", 400),
    }
    before = requests.get(f"{server.url}/metrics", timeout=5).text.count("modelwarden_feedback_total{")
    for what, (token, reason, status) in cases.items():
        answer = requests.post(f"{server.url}/v1/models/{MODEL}/feedback", json={"token": token, "actual": [1, 1, 1]}, timeout=10)
        assert answer.status_code == status, (what, answer.text)
        assert answer.json()["error"], what
        assert errors_by_reason(server)[reason] >= 1, (what, reason)
    # A batch with one bad token counts none of its items.
    answer = requests.post(f"{server.url}/v1/models/{MODEL}/feedback", timeout=10,
                           json=[{"token": good, "actual": [1, 1, 1]}, {"token": other_key, "actual": [0, 0, 0]}])
    assert answer.status_code == 403
    # Length mismatch between the token's predictions and the actual values.
    answer = requests.post(f"{server.url}/v1/models/{MODEL}/feedback", json={"token": good, "actual": [1]}, timeout=10)
    assert answer.status_code == 400 and "vouches for 3 predictions" in answer.json()["error"]
    assert errors_by_reason(server) | {"invalid_token": 4, "wrong_model_token": 1, "invalid_payload": 2} == errors_by_reason(server)
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    counted = [line for line in text.splitlines() if line.startswith("modelwarden_feedback_total{") and not line.endswith(" 0.0")]
    assert counted == [] and text.count("modelwarden_feedback_total{") == before
    # A token past the server's max age: that server refuses it as expired.
    short = start_model_server(model.model, MODEL, version="1", track="stable", extra_args=(
        "--feedback-key-file", str(key_file), "--feedback-token-max-age", "1", "--prediction-log", "off"))
    import time
    from unittest import mock

    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - 3600):  # issued an hour ago
        old = expired.issue(Prediction(MODEL, "stable", "1", (1,)))
    answer = requests.post(f"{short.url}/v1/models/{MODEL}/feedback", json={"token": old, "actual": 1}, timeout=10)
    assert answer.status_code == 403 and "expired" in answer.json()["error"]
    assert errors_by_reason(short)["expired_token"] == 1
    # Feedback for more other versions than --max-feedback-versions is refused (a bound on series).
    capped = start_model_server(model.model, MODEL, version="1", track="stable", extra_args=(
        "--feedback-key-file", str(key_file), "--max-feedback-versions", "2", "--prediction-log", "off"))
    signer = FeedbackTokens([KEYS[0].encode()])
    for version in ("old-1", "old-2"):
        answer = requests.post(f"{capped.url}/v1/models/{MODEL}/feedback", timeout=10,
                               json={"token": signer.issue(Prediction(MODEL, "stable", version, (1,))), "actual": 1})
        assert answer.status_code == 200, answer.text
    answer = requests.post(f"{capped.url}/v1/models/{MODEL}/feedback", timeout=10,
                           json={"token": signer.issue(Prediction(MODEL, "stable", "old-3", (1,))), "actual": 1})
    assert answer.status_code == 429 and "--max-feedback-versions" in answer.json()["error"]
    assert errors_by_reason(capped)["feedback_version_limit"] == 1
    # Huge batches keep their token in the body only: no header beyond 4 KiB (2000 regression values).
    regressor = start_model_server(serving_examples["regressor"].model, MODEL, version="1", track="stable",
                                   extra_args=("--feedback-key-file", str(key_file), "--prediction-log", "off"))
    many = datagen.regression(2000, seed=5)[0].tolist()
    answer = requests.post(f"{regressor.url}/v1/models/{MODEL}:predict", json={"instances": many}, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["feedbackToken"]) > 4096 and HEADER not in answer.headers
    # A server without a key issues no tokens and refuses token feedback with a reason.
    plain = start_model_server(model.model, MODEL, version="1", track="stable", extra_args=("--prediction-log", "off"))
    answer = requests.post(f"{plain.url}/v1/models/{MODEL}:predict", json={"instances": rows}, timeout=10)
    assert HEADER not in answer.headers and "feedbackToken" not in answer.json()
    answer = requests.post(f"{plain.url}/v1/models/{MODEL}/feedback", json={"token": good, "actual": [1, 1, 1]}, timeout=10)
    assert answer.status_code == 400 and "--feedback-key-file" in json.dumps(answer.json())
