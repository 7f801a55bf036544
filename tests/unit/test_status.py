import datetime

from modelwarden.api.common import set_condition
from modelwarden.controller.status import spec_status_patch

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
T1 = T0 + datetime.timedelta(minutes=5)


def test_condition_transition_time_moves_only_when_status_flips():
    conditions = set_condition([], "Ready", False, "Starting", "", T0, 1)
    same = set_condition(conditions, "Ready", False, "StillStarting", "", T1, 1)
    flipped = set_condition(same, "Ready", True, "Ready", "", T1, 1)
    assert same[0].to_wire()["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0].reason == "StillStarting"
    assert flipped[0].to_wire()["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert len(flipped) == 1 and conditions[0].reason == "Starting"  # the input list is not changed


def test_valid_spec_sets_pending_once_and_then_writes_nothing():
    first = spec_status_patch({}, 1, None, T0, "Failed")
    assert first["phase"] == "Pending" and first["observedGeneration"] == 1
    assert first["conditions"][0]["type"] == "InvalidSpec" and first["conditions"][0]["status"] == "False"
    assert spec_status_patch(first, 1, None, T1, "Failed") == {}


def test_invalid_spec_fails_with_the_message_and_keeps_other_conditions():
    status = {"phase": "Stable", "conditions": [{"type": "Ready", "status": "True"}]}
    patch = spec_status_patch(status, 2, "spec.stable: Field required", T0, "Failed")
    assert patch["phase"] == "Failed"
    assert patch["observedGeneration"] == 2
    invalid = [c for c in patch["conditions"] if c["type"] == "InvalidSpec"][0]
    assert invalid["status"] == "True" and "spec.stable" in invalid["message"]
    assert [(c["type"], c["status"]) for c in patch["conditions"]] == [("Ready", "True"), ("InvalidSpec", "True")]
