"""What `kubectl modelwarden get` and `history` show, as data (the JSON output) and as text: pure
functions of the objects read, so the table and the JSON never disagree."""

from __future__ import annotations

import datetime
from typing import Any

from modelwarden.api.duration import format_age

TRACKS = ("stable", "canary", "shadow")


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def rollout(md: dict[str, Any], policies: list[dict[str, Any]], events: list[dict[str, Any]], now: datetime.datetime,
            recent: int = 8) -> dict[str, Any]:
    """One ModelDeployment with the policies that judge it and its recent Events (the JSON of `get`)."""
    status, spec = md.get("status") or {}, md.get("spec") or {}
    weights = status.get("weights") or {}
    tracks = {}
    for track in TRACKS:
        served = status.get(track)
        if not served:
            continue
        weight = weights.get("mirror") if track == "shadow" else weights.get(track)
        tracks[track] = {"version": served.get("version"), "modelUri": served.get("resolvedUri") or served.get("modelUri"),
                         "replicas": served.get("replicas", 0), "readyReplicas": served.get("readyReplicas", 0),
                         ("mirrorPercent" if track == "shadow" else "weight"): weight or 0}
    steps = (spec.get("canary") or {}).get("steps") or []
    judged = []
    for policy in sorted(policies, key=lambda p: p["metadata"]["name"]):
        pstatus = policy.get("status") or {}
        last = pstatus.get("lastEvaluation") or {}
        judged.append({
            "name": policy["metadata"]["name"], "track": (policy.get("spec") or {}).get("track", "canary"),
            "phase": pstatus.get("phase"), "verdict": last.get("verdict"), "evaluatedAt": last.get("time"),
            "version": pstatus.get("evaluatedVersion"),
            "consecutiveFailures": pstatus.get("consecutiveFailures", 0),
            "failureThreshold": (policy.get("spec") or {}).get("failureThreshold", 3),
            "failingChecks": [{"check": r.get("check"), "value": r.get("value"), "threshold": r.get("threshold"),
                               "message": r.get("message", "")} for r in last.get("results") or [] if r.get("verdict") == "Fail"],
        })
    ordered = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp") or "")
    return {
        "name": md["metadata"]["name"], "namespace": md["metadata"].get("namespace"),
        "phase": status.get("phase"), "message": status.get("message", ""),
        "ready": _condition(md, "Ready").get("status"), "paused": bool(status.get("paused")),
        "step": status.get("step"), "steps": [{"weight": s.get("weight"), "pause": s.get("pause"), "approval": s.get("approval")}
                                              for s in steps],
        "verdict": status.get("verdict"), "tracks": tracks, "rollback": status.get("rollback"),
        "requests": status.get("requests") or {}, "policies": judged,
        "gates": [{"name": g.get("name"), "type": g.get("type"), "passed": bool(g.get("passedAt")), "lastCode": g.get("lastCode"),
                   "message": g.get("message", "")} for g in status.get("gates") or []],
        "events": [{"age": format_age(e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp"), now) or "-",
                    "type": e.get("type"), "reason": e.get("reason"), "object": (e.get("involvedObject") or {}).get("name"),
                    "message": e.get("message", "")} for e in ordered[-recent:]],
    }


SYMBOL = {"Pass": "✔", "Warning": "!", "Fail": "✖", "InsufficientData": "…", "Error": "⚠", None: "·"}


def render_rollout(view: dict[str, Any]) -> str:
    """The tree `kubectl argo rollouts get` users expect: tracks, step, gates, recent Events."""
    lines = [f"Name:       {view['name']}", f"Namespace:  {view['namespace']}",
             f"Phase:      {view['phase']}{' — ' + view['message'] if view['message'] else ''}",
             f"Ready:      {view['ready'] or '-'}{'   (paused)' if view['paused'] else ''}"]
    if view["steps"]:
        marks = []
        current = int(view["step"].split("/")[0]) - 1 if view["step"] else -1
        for index, step in enumerate(view["steps"]):
            mark = "▶" if index == current else ("✔" if index < current else " ")
            marks.append(f"{mark}{step['weight']}%{' (approval)' if step.get('approval') else ''}")
        lines.append(f"Steps:      {'  '.join(marks)}")
    lines.append(f"Verdict:    {view['verdict'] or '-'}")
    lines.append("Tracks:")
    for track, served in view["tracks"].items():
        share = f"mirror {served['mirrorPercent']}%" if track == "shadow" else f"weight {served['weight']}%"
        lines.append(f"  {track:<7} {served['version']:<10} {served['readyReplicas']}/{served['replicas']} ready   {share:<12} "
                     f"{served['modelUri'] or ''}")
    if view["rollback"]:
        rollback = view["rollback"]
        lines.append(f"Rollback:   {rollback.get('track')} {rollback.get('fromVersion')} -> {rollback.get('toVersion')}: "
                     f"{rollback.get('reason')}")
    lines.append("Policies:" if view["policies"] else "Policies:   none judge this ModelDeployment")
    for policy in view["policies"]:
        lines.append(f"  {SYMBOL.get(policy['verdict'], '·')} {policy['name']:<24} {policy['track']:<7} {policy['phase'] or 'Pending':<16} "
                     f"failures {policy['consecutiveFailures']}/{policy['failureThreshold']}"
                     f"{'   at ' + policy['evaluatedAt'] if policy['evaluatedAt'] else ''}")
        for check in policy["failingChecks"]:
            value = "" if check["value"] is None else f" {check['value']:.4g}"
            threshold = "" if check["threshold"] is None else f" (threshold {check['threshold']:.4g})"
            lines.append(f"      ✖ {check['check']}{value}{threshold} {check['message']}".rstrip())
    for gate in view["gates"]:
        lines.append(f"  {'✔' if gate['passed'] else '⏸'} webhook {gate['name']:<16} {gate['type']:<18} "
                     f"{'passed' if gate['passed'] else 'holds'}{': ' + gate['message'] if gate['message'] else ''}")
    lines.append("Events:" if view["events"] else "Events:     none")
    for event in view["events"]:
        lines.append(f"  {event['age']:>4}  {event['type']:<7} {event['reason']:<20} {event['message']}")
    return "\n".join(lines)


def history(md: dict[str, Any]) -> list[dict[str, Any]]:
    """Stable versions, oldest first, as status records them, each with its lineage (candidates)."""
    return [{"version": h.get("version"), "modelUri": h.get("resolvedUri") or h.get("modelUri"), "reason": h.get("reason", ""),
             "promotedAt": h.get("promotedAt"), "retiredAt": h.get("retiredAt"), "modelVersion": h.get("modelVersion"),
             "runId": h.get("runId"), "lineage": h.get("lineage")} for h in (md.get("status") or {}).get("history") or []]


def render_history(entries: list[dict[str, Any]], md: dict[str, Any] | None = None) -> str:
    rows = [("VERSION", "REASON", "PROMOTED", "RETIRED", "MODEL")]
    rows += [(e["version"] or "", e["reason"], e["promotedAt"] or "-", e["retiredAt"] or "-", e["modelUri"] or "") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip() for row in rows]
    for entry in entries:
        if entry.get("lineage"):
            lines.append(f"{entry['version']}: {describe_lineage(entry['lineage'])}")
    status = (md or {}).get("status") or {}
    if status.get("candidate") or status.get("candidates"):
        lines.append("Candidates:")
        if current := status.get("candidate"):
            lines.append(f"  {current['version']:<10} in {current['stage']} since {current['stageStartedAt']}: "
                         f"{describe_lineage(current['lineage'])}")
        lines += [f"  {r['version']:<10} {r['outcome']:<9} {r['at']}  {r.get('reason', '')}" for r in status.get("candidates") or []]
    return "\n".join(lines)


def describe_lineage(lineage: dict[str, Any]) -> str:
    """Where a model came from and the gates it passed, in one line."""
    if lineage.get("source") == "retrain":
        parts = [f"retrained by Job {lineage.get('job')} (DriftPolicy {lineage.get('policy')}, breach {lineage.get('breachId')}"
                 + (f": {', '.join(lineage['checks'])}" if lineage.get("checks") else "") + ")"]
    else:
        parts = [f"from {lineage.get('source')}"]
    if lineage.get("windowStart"):
        parts.append(f"data {lineage['windowStart']}..{lineage.get('windowEnd', '')}")
    if lineage.get("runId"):
        parts.append(f"MLflow run {lineage['runId']}" + (f", version {lineage['modelVersion']}" if lineage.get("modelVersion") else ""))
    if lineage.get("parentVersion"):
        parts.append(f"parent {lineage['parentVersion']}")
    if lineage.get("gates"):
        parts.append("gates " + ", ".join(f"{g['stage']} {g['policy']} {g['verdict']}"
                                          + (f" ({' '.join(g['checks'])})" if g.get("checks") else "") for g in lineage["gates"]))
    return "; ".join(parts)


def spec_patch(md: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that makes spec.stable name what serves (condition SpecBehind), or None."""
    status = md.get("status") or {}
    behind = next((c for c in status.get("conditions") or [] if c.get("type") == "SpecBehind"), {})
    served = status.get("stable") or {}
    if behind.get("status") != "True" or not served.get("modelUri"):
        return None
    uri = served.get("resolvedUri") or served["modelUri"]
    return {"spec": {"stable": {"version": served["version"], "modelUri": uri, "sha256": served.get("sha256")}}}
