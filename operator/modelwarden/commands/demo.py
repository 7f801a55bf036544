"""`modelwarden demo`: run the embedded sandbox scenario (modelwarden.sandbox.demo) on this machine.

Exit status: 0 when the scenario completed (the canary was rolled back, one retraining Job was
created and an alert was delivered), else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelwarden.sandbox.demo import Demo


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", choices=("canary-rollback", "closed-loop"), default="canary-rollback",
                        help="canary-rollback (default): a drifting canary is rolled back, retrained and alerted; closed-loop: "
                             "drift on stable is retrained, and the new model goes shadow -> canary -> stable by itself")
    parser.add_argument("--speed", choices=("normal", "fast", "max"), default="normal",
                        help="scenario pace: normal (~2 min), fast, or max (for tests)")
    parser.add_argument("--duration", type=float, default=170.0, help="give up after this many seconds (default 170)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (progress goes to stderr)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and models here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="after the scenario, keep the sandbox running (prints a KUBECONFIG for kubectl and "
                             "kubectl modelwarden) until Ctrl-C")
    parser.add_argument("--control-plane", choices=("emulator", "real"), default="emulator",
                        help="the embedded API emulator (default, starts in a second) or a real kube-apiserver, etcd and "
                             "kube-controller-manager built by `make control-plane`")
    parser.add_argument("--kube-bin", type=Path, default=Path(os.environ.get("MODELWARDEN_KUBE_BIN", ".tools/kubernetes/bin")),
                        help="where kube-apiserver and kube-controller-manager are (default .tools/kubernetes/bin; "
                             "env MODELWARDEN_KUBE_BIN)")


def run(args: argparse.Namespace) -> int:
    if args.scenario == "closed-loop":
        from modelwarden.sandbox.demo_closedloop import ClosedLoopDemo

        summary = ClosedLoopDemo(args).run(report=lambda s: print(json.dumps(s, indent=2), flush=True) if args.json else _print_loop(s))
        promoted = summary["stableVersion"] != "1" and bool((summary["history"] or [{}])[-1].get("lineage"))
        return 0 if promoted and len(summary["jobs"]) == 1 else 1
    summary = Demo(args).run(report=lambda s: print(json.dumps(s, indent=2), flush=True) if args.json else _print_summary(s))
    complete = summary["rolledBack"] and len(summary["jobs"]) == 1 and summary["alertsReceived"] > 0
    return 0 if complete else 1


def _print_loop(summary: dict[str, Any]) -> None:
    from modelwarden.commands.kubectl_view import describe_lineage

    print("\nScenario")
    for milestone in summary["milestones"]:
        print(f"  {milestone['at']:6.1f}s  {milestone['what']}")
    print(f"\nResult\n  stable version       {summary['stableVersion']} (spec names {summary['specStableVersion']}; "
          f"SpecBehind: {summary['specBehind']})\n  retraining Jobs      {', '.join(summary['jobs']) or 'none'}\n"
          f"  requests by track    {summary['requests']}, mirrored to the shadow: {summary['mirrored']}\n"
          f"  duration             {summary['durationSeconds']}s\n\nHistory (with lineage)")
    for entry in summary["history"]:
        print(f"  {entry['version']:<6} {entry.get('reason', ''):<11} {entry.get('modelUri', '')}")
        if entry.get("lineage"):
            print(f"         {describe_lineage(entry['lineage'])}")
    print("\nEvents")
    for event in summary["events"]:
        print(f"  {event['type'] or '':<8} {event['reason'] or '':<22} {event['object'] or '':<20} {(event['message'] or '')[:90]}")
    sys.stdout.flush()


def _print_summary(summary: dict[str, Any]) -> None:
    try:
        _print_summary_lines(summary)
    finally:
        sys.stdout.flush()  # with --keep the process goes on: show it now


def _print_summary_lines(summary: dict[str, Any]) -> None:
    print("\nScenario")
    for milestone in summary["milestones"]:
        print(f"  {milestone['at']:6.1f}s  {milestone['what']}")
    print("\nResult")
    rows = [("canary rolled back", summary["rolledBack"]), ("stable version", summary["stableVersion"]),
            ("retraining Jobs", ", ".join(summary["jobs"]) or "none"),
            ("alerts received", f"{summary['alertsReceived']} (signatures valid: {summary['alertSignaturesValid']})"),
            ("requests by track", summary["requests"]), ("duration", f"{summary['durationSeconds']}s")]
    for label, value in rows:
        print(f"  {label:<20} {value}")
    print("\nDecision trail (the gate's evaluations and what they led to)")
    for step in summary["decisionTrail"]:
        print(f"  {step['at'][11:19]:<8}  {step['what']:<19} {step['detail'][:100]}")
    print("\nEvents")
    for event in summary["events"]:
        print(f"  {event['type'] or '':<8} {event['reason'] or '':<22} {event['object'] or '':<20} {(event['message'] or '')[:90]}")
