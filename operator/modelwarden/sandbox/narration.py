"""What `modelwarden demo` says while it runs and in its summary: the ModelDeployment's and the
gate's state in words (weights as requested and as applied, and why they differ; the samples still
missing), and the decision trail. Pure functions of the objects read."""

from __future__ import annotations

import datetime
from typing import Any

from modelwarden.api.duration import parse_timestamp

EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
ACTIONS = ("CanaryStarted", "CanaryStepAdvanced", "CanaryPromoted", "CanaryAborted", "StableRolledBack", "RollbackRequested",
           "RetrainLaunched", "AlertSent", "AlertFailed", "DriftDetected", "QualityDegraded", "RetryRequested")


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def deployment_words(md: dict[str, Any]) -> str:
    status, spec = md.get("status") or {}, md.get("spec") or {}
    if not status.get("phase") or not status.get("stable"):
        return "waiting for the operator to start the stable track"
    phase, weights = status["phase"], status.get("weights") or {}
    stable, canary = status.get("stable") or {}, status.get("canary") or {}
    if phase in ("Progressing", "Paused") and canary:
        canary_spec = spec.get("canary") or (spec.get("candidates") or {}).get("canary") or {}  # a candidate's: spec.candidates
        steps = canary_spec.get("steps") or []
        index = status.get("canaryStep")
        requested = steps[index]["weight"] if steps and index is not None and index < len(steps) else canary_spec.get("weight")
        applied = weights.get("canary", 0)
        why = ""
        if requested is not None and applied != requested:
            why = (f" (replica ratio: {stable.get('replicas', 0)} stable pods, {canary.get('replicas', 0)} canary pod"
                   f"{'s' if canary.get('replicas', 0) != 1 else ''})") if "replica ratio" in _condition(status, "TrafficReady").get("message", "") \
                else " (weights not applied yet)"
        held = f"; {_condition(status, 'Paused').get('message')}" if phase == "Paused" else ""
        return (f"canary {canary.get('version')} at step {status.get('step') or '-'}: {requested}% requested, "
                f"{applied}% applied{why}{held}")
    if phase == "RolledBack" and status.get("rollback"):
        rollback = status["rollback"]
        return f"{rollback.get('track')} {rollback.get('fromVersion')} rolled back; stable {stable.get('version')} serves all traffic"
    if phase == "Promoting":
        return f"promoting {stable.get('version')}: the stable track rolls out"
    if phase == "Pending":
        return f"starting stable {stable.get('version')}: {stable.get('readyReplicas', 0)}/{stable.get('replicas', 0)} pods ready"
    if phase == "Stable":
        return f"stable {stable.get('version')} serves all traffic ({stable.get('readyReplicas', 0)} pods ready)"
    return f"{phase}: {status.get('message', '')}"


def policy_words(policy: dict[str, Any]) -> str:
    status = policy.get("status") or {}
    last = status.get("lastEvaluation") or {}
    if not last:
        return "the gate has not evaluated yet"
    results = last.get("results") or []
    verdict = last.get("verdict")
    if verdict == "InsufficientData":
        missing = next((r.get("message") for r in results if r.get("verdict") == "InsufficientData" and r.get("message")), "")
        return f"the gate waits for data ({missing})" if missing else "the gate waits for data"
    if verdict == "Fail":
        threshold = (policy.get("spec") or {}).get("failureThreshold", 3)
        failed = ", ".join(f"{r['check']} {r['value']:.3g}" if r.get("value") is not None else r["check"]
                           for r in results if r.get("verdict") == "Fail")
        return f"the gate FAILS ({status.get('consecutiveFailures', 0)}/{threshold} in a row): {failed}"
    if verdict == "Error":
        return f"the gate cannot evaluate: {next((r.get('message') for r in results if r.get('verdict') == 'Error'), '')}"
    return f"the gate passes ({len(results)} checks)" + (" with a drift warning" if verdict == "Warning" else "")


def decision_trail(policy: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The policy's evaluations and the actions they led to, in time order."""
    status = policy.get("status") or {}
    threshold = (policy.get("spec") or {}).get("failureThreshold", 3)
    trail, streak = [], 0
    for evaluation in status.get("evaluations") or []:
        streak = streak + 1 if evaluation.get("verdict") == "Fail" else (0 if evaluation.get("verdict") in ("Pass", "Warning") else streak)
        failed = evaluation.get("failed") or []
        detail = evaluation.get("verdict", "") + (f" {streak}/{threshold}: {', '.join(failed)}" if failed else "")
        trail.append({"at": evaluation.get("time", ""), "what": "evaluation", "detail": detail})
    for event in events:
        if event.get("reason") in ACTIONS:
            at = event.get("lastTimestamp") or event.get("eventTime") or (event.get("metadata") or {}).get("creationTimestamp") or ""
            trail.append({"at": at, "what": event["reason"], "detail": event.get("message", "")})
    merged: list[dict[str, str]] = []
    for step in sorted(trail, key=lambda t: _instant(t["at"])):
        last = merged[-1] if merged else None
        if last and step["what"] == last["what"] == "evaluation" and step["detail"] == last["detail"].split(" ×")[0]:
            runs = int(last["detail"].split(" ×")[1]) + 1 if " ×" in last["detail"] else 2
            last["detail"] = f"{step['detail']} ×{runs}"  # repeated looks with the same outcome: one line
        else:
            merged.append(dict(step))
    return merged


def _instant(stamp: str) -> datetime.datetime:
    try:
        return parse_timestamp(stamp) or EARLIEST
    except ValueError:
        return EARLIEST
