"""What the demo says: states in words, weights as requested and applied with the reason they
differ, the samples a waiting gate lacks, and the decision trail with repeated looks folded."""

from modelwarden.sandbox.narration import decision_trail, deployment_words, policy_words

SPEC = {"canary": {"version": "2", "steps": [{"weight": 20}, {"weight": 50}]}}


def md(status):
    return {"spec": SPEC, "status": status}


def test_the_rollout_in_words():
    assert deployment_words({"spec": SPEC}) == "waiting for the operator to start the stable track"
    approximated = md({"phase": "Progressing", "step": "1/2", "canaryStep": 0, "weights": {"canary": 25},
                       "stable": {"version": "1", "replicas": 3}, "canary": {"version": "2", "replicas": 1},
                       "conditions": [{"type": "TrafficReady", "message": "weights approximated by replica ratio: canary 25% for 20% requested"}]})
    assert deployment_words(approximated) == ("canary 2 at step 1/2: 20% requested, 25% applied "
                                              "(replica ratio: 3 stable pods, 1 canary pod)")
    rolled = md({"phase": "RolledBack", "stable": {"version": "1"}, "rollback": {"track": "canary", "fromVersion": "2"}})
    assert deployment_words(rolled) == "canary 2 rolled back; stable 1 serves all traffic"


def test_the_gate_in_words():
    waiting = {"status": {"lastEvaluation": {"verdict": "InsufficientData", "results": [
        {"check": "performance/accuracy", "verdict": "InsufficientData", "message": "accuracy: 40 observations, need 300"}]}}}
    assert policy_words(waiting) == "the gate waits for data (accuracy: 40 observations, need 300)"
    failing = {"spec": {"failureThreshold": 2}, "status": {"consecutiveFailures": 1, "lastEvaluation": {"verdict": "Fail", "results": [
        {"check": "drift/features", "verdict": "Fail", "value": 0.3333}, {"check": "performance/accuracy", "verdict": "Pass", "value": 0.8}]}}}
    assert policy_words(failing) == "the gate FAILS (1/2 in a row): drift/features 0.333"


def test_the_decision_trail_folds_repeated_looks_and_interleaves_actions():
    policy = {"spec": {"failureThreshold": 2}, "status": {"evaluations": [
        {"time": "2026-12-03T07:00:00Z", "verdict": "Pass"}, {"time": "2026-12-03T07:00:02Z", "verdict": "Pass"},
        {"time": "2026-12-03T07:00:04.5Z", "verdict": "Fail", "failed": ["drift/features"]},
        {"time": "2026-12-03T07:00:06Z", "verdict": "Fail", "failed": ["drift/features"]}]}}
    events = [{"reason": "CanaryAborted", "message": "canary 2 rolled back", "lastTimestamp": "2026-12-03T07:00:07Z"},
              {"reason": "TrafficUpdated", "message": "not an action", "lastTimestamp": "2026-12-03T07:00:07Z"},
              {"reason": "CanaryStepAdvanced", "message": "to 50%", "lastTimestamp": "2026-12-03T07:00:03Z"}]
    trail = [(t["what"], t["detail"]) for t in decision_trail(policy, events)]
    assert trail == [("evaluation", "Pass ×2"), ("CanaryStepAdvanced", "to 50%"), ("evaluation", "Fail 1/2: drift/features"),
                     ("evaluation", "Fail 2/2: drift/features"), ("CanaryAborted", "canary 2 rolled back")]
