"""A DriftPolicy's history as scalars (planning.history): verdicts and failing checks from status,
the last evaluation's values, and the operator's range series; steps are whole seconds."""

from __future__ import annotations

from modelwarden.planning.history import Scalar, from_series, from_status


def test_status_gives_breaches_failing_checks_and_the_last_values():
    status = {"evaluations": [{"time": "2026-12-03T12:00:00Z", "verdict": "Pass"},
                              {"time": "2026-12-03T12:01:00.5Z", "verdict": "Fail", "failed": ["a/x", "b/y"]},
                              {"time": "2026-12-03T12:02:00Z", "verdict": "InsufficientData"}],
              "lastEvaluation": {"time": "2026-12-03T12:01:00.5Z", "results": [
                  {"check": "a/x", "value": 0.5}, {"check": "b/y", "value": None}, {"check": "c/z", "value": float("inf")}]}}
    points = {(p.tag, p.step): p.value for p in from_status(status)}
    t0, t1 = 1796299200, 1796299260
    assert points == {("breach/failing", t0): 0.0, ("failing/a/x", t0): 0.0, ("failing/b/y", t0): 0.0,
                      ("breach/failing", t1): 1.0, ("failing/a/x", t1): 1.0, ("failing/b/y", t1): 1.0, ("check/a/x", t1): 0.5}
    assert from_status({}) == []


def test_range_series_become_check_and_drift_scalars_without_nan():
    checks = from_series("check", [({"check": "a/x"}, [(60.0, 0.1), (120.0, float("nan"))])])
    drifts = from_series("drift", [({"check": "drift/features", "feature": "amount"}, [(60.0, 0.3)])])
    assert checks == [Scalar("check/a/x", 60, 60.0, 0.1)]
    assert drifts == [Scalar("drift/drift/features/amount", 60, 60.0, 0.3)]
