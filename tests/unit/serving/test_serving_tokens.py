"""Feedback tokens (serving/tokens.py): what they vouch for, and every way a token is refused."""

from __future__ import annotations

import base64

import pytest

from modelwarden.serving.payload import PayloadError, parse_feedback
from modelwarden.serving.tokens import FeedbackTokens, Prediction, TokenError, read_keys

NEW, OLD = b"new-key-0123456789abcdef", b"old-key-0123456789abcdef"
CANARY = Prediction("fraud", "canary", "2", (1, 0, 1))


def test_a_token_vouches_for_model_track_version_and_predictions():
    tokens = FeedbackTokens([NEW])
    assert tokens.verify(tokens.issue(CANARY), "fraud") == CANARY


def test_rotation_the_first_key_signs_and_every_key_verifies():
    before = FeedbackTokens([OLD]).issue(CANARY)
    rotated = FeedbackTokens([NEW, OLD])
    after = rotated.issue(CANARY)
    assert rotated.verify(before, "fraud") == CANARY and rotated.verify(after, "fraud") == CANARY
    # Once the old key is dropped, tokens it signed are refused; the new key's are not.
    retired = FeedbackTokens([NEW])
    assert retired.verify(after, "fraud") == CANARY
    with pytest.raises(TokenError) as refused:
        retired.verify(before, "fraud")
    assert refused.value.reason == "invalid_token" and refused.value.status == 403


def _flip(text: str, position: int) -> str:
    return text[:position] + ("A" if text[position] != "A" else "B") + text[position + 1:]


@pytest.mark.parametrize("mangle", [
    pytest.param(lambda token: _flip(token, 5), id="tampered payload"),
    pytest.param(lambda token: _flip(token, len(token) - 3), id="tampered signature"),
    pytest.param(lambda token: token[: len(token) // 2], id="truncated"),
    pytest.param(lambda token: token + "x", id="extended"),
    pytest.param(lambda token: FeedbackTokens([b"someone-else-key-0123"]).issue(CANARY), id="forged with another key"),
    pytest.param(lambda token: base64.urlsafe_b64encode(b'{"m":"fraud"}').decode() + "." + token.split(".", 1)[1], id="swapped payload"),
])
def test_a_mangled_or_forged_token_is_refused(mangle):
    tokens = FeedbackTokens([NEW])
    with pytest.raises(TokenError) as refused:
        tokens.verify(mangle(tokens.issue(CANARY)), "fraud")
    assert refused.value.reason == "invalid_token"


@pytest.mark.parametrize("token", [None, "", 42, ["a"]])
def test_a_token_that_is_not_a_string_is_a_400(token):
    with pytest.raises(TokenError) as refused:
        FeedbackTokens([NEW]).verify(token, "fraud")
    assert (refused.value.reason, refused.value.status) == ("invalid_token", 400)


def test_another_models_token_is_refused():
    tokens = FeedbackTokens([NEW])
    with pytest.raises(TokenError) as refused:
        tokens.verify(tokens.issue(CANARY), "churn")
    assert refused.value.reason == "wrong_model_token" and "'fraud'" in refused.value.message


def test_an_expired_token_is_refused(monkeypatch):
    tokens = FeedbackTokens([NEW], max_age_seconds=3600)
    real_time = __import__("time").time
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: real_time() - 7200)  # issued two hours ago
    old = tokens.issue(CANARY)
    monkeypatch.undo()
    with pytest.raises(TokenError) as refused:
        tokens.verify(old, "fraud")
    assert refused.value.reason == "expired_token"
    assert FeedbackTokens([NEW], max_age_seconds=3 * 3600).verify(old, "fraud") == CANARY


def test_token_errors_are_payload_errors_with_a_metrics_reason():
    assert issubclass(TokenError, PayloadError)


def test_keys_one_per_line_blank_lines_ignored_and_short_keys_refused(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"\n{NEW.decode()}\n\n{OLD.decode()}\n")
    assert read_keys(path) == [NEW, OLD]
    path.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_keys(path)
    path.write_text("\n \n")
    with pytest.raises(ValueError, match="no feedback key"):
        read_keys(path)


def test_feedback_items_give_exactly_one_of_token_request_id_or_predicted():
    [item] = parse_feedback({"token": "abc", "actual": [1, 0]}, "classification", ["0", "1"])
    assert item.token == "abc" and item.actual == ["1", "0"] and item.request_id is None
    for both in ({"token": "abc", "request_id": "r", "actual": 1}, {"token": "abc", "predicted": 1, "actual": 1}, {"actual": 1}):
        with pytest.raises(PayloadError, match="exactly one of"):
            parse_feedback(both, "classification", ["0", "1"])
    with pytest.raises(PayloadError, match="token must be a non-empty string"):
        parse_feedback({"token": "", "actual": 1}, "classification", ["0", "1"])


def test_a_token_from_a_pod_whose_clock_runs_ahead_is_accepted_within_the_skew():
    from modelwarden.serving.tokens import CLOCK_SKEW_SECONDS

    token = FeedbackTokens([NEW]).issue(CANARY)
    now = __import__("time").time()
    behind = FeedbackTokens([NEW], clock=lambda: now - CLOCK_SKEW_SECONDS + 5)  # this pod's clock is behind
    assert behind.verify(token, "fraud") == CANARY
    far_behind = FeedbackTokens([NEW], clock=lambda: now - CLOCK_SKEW_SECONDS - 60)
    with pytest.raises(TokenError) as refused:
        far_behind.verify(token, "fraud")
    assert refused.value.reason == "invalid_token" and "future" in refused.value.message


def test_a_token_names_its_namespace_and_another_namespace_refuses_it():
    tokens = FeedbackTokens([NEW])
    staging = tokens.issue(Prediction("fraud", "canary", "3", (1,), "staging"))
    assert tokens.verify(staging, "fraud", "staging").namespace == "staging"
    with pytest.raises(TokenError) as refused:
        tokens.verify(staging, "fraud", "prod")
    assert refused.value.reason == "wrong_model_token" and "'staging'" in refused.value.message


def test_the_key_file_is_read_again_when_it_changes_so_rotation_needs_no_restart(tmp_path):
    path = tmp_path / "keys"
    path.write_text(OLD.decode() + "\n")
    tokens = FeedbackTokens.from_file(path, recheck_seconds=0)  # the server looks once a second
    before = tokens.issue(CANARY)
    # Step 1: the new key verifies (second line); step 2: it signs (first line).
    path.write_text(f"{OLD.decode()}\n{NEW.decode()}\n")
    assert tokens.verify(FeedbackTokens([NEW]).issue(CANARY), "fraud") == CANARY
    path.write_text(f"{NEW.decode()}\n{OLD.decode()}\n")
    after = tokens.issue(CANARY)
    assert FeedbackTokens([NEW]).verify(after, "fraud") == CANARY and tokens.verify(before, "fraud") == CANARY
    # A file emptied mid-update keeps the keys there were.
    path.write_text("")
    assert tokens.verify(after, "fraud") == CANARY
