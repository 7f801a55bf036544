"""kubectl-modelwarden: day-2 operations on ModelDeployments and DriftPolicies from kubectl.

    kubectl modelwarden get NAME [--watch]       tracks, weights, step, gating policies, recent Events
    kubectl modelwarden promote NAME [--full]    the current step is done (--full: promote to stable now)
    kubectl modelwarden abort NAME               roll the canary back now
    kubectl modelwarden pause|resume NAME        hold / release the canary's steps
    kubectl modelwarden approve NAME             approve a step with approval: required
    kubectl modelwarden retry NAME               start a rolled-back canary over
    kubectl modelwarden history NAME             the stable versions, newest last, with lineage and candidates
    kubectl modelwarden export-spec NAME         the spec patch to commit when stable is ahead of Git (SpecBehind)
    kubectl modelwarden evaluate-now POLICY      evaluate a DriftPolicy at once

Every action is an annotation on the object (never a write to its spec) that the operator acts on
once and acknowledges in status; the command waits for that acknowledgement (--timeout) and exits
1 if none came (is the operator running?) or the operator had nothing to act on (it says why).
Exit 2: bad usage, or the object does not exist.
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
import sys
import time
from typing import Any

from modelwarden.commands.kubectl_view import SYMBOL, history, render_history, render_rollout, rollout, spec_patch
from modelwarden.contract.kubernetes import (
    ABORT_ANNOTATION,
    API_VERSION,
    APPROVE_ANNOTATION,
    EVALUATE_ANNOTATION,
    PAUSED_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
)

MERGE_PATCH = "application/merge-patch+json"
# request -> (annotation, where status acknowledges it)
REQUESTS = {
    "promote": (PROMOTE_ANNOTATION, ("requests", "promote")),
    "promote-full": (PROMOTE_FULL_ANNOTATION, ("requests", "promoteFull")),
    "abort": (ABORT_ANNOTATION, ("requests", "abort")),
    "approve": (APPROVE_ANNOTATION, ("requests", "approve")),
    "retry": (RETRY_ANNOTATION, ("retryToken",)),
}


class Cluster:
    """The few API calls the plugin makes, through the kubeconfig kubectl uses."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import config, dynamic

        self.dynamic = dynamic.DynamicClient(config.new_client_from_config(config_file=kubeconfig, context=context))
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c["name"] == context), active)
        self.default_namespace = (active or {}).get("context", {}).get("namespace") or "default"

    def _path(self, plural: str, namespace: str, name: str = "", group: str = API_VERSION) -> str:
        prefix = "/api/v1" if group == "v1" else f"/apis/{group}"
        return f"{prefix}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self.dynamic.request("get", self._path(plural, namespace, name)).to_dict()
        except NotFoundError:
            return None

    def items(self, plural: str, namespace: str, group: str = API_VERSION, **params: str) -> list[dict[str, Any]]:
        return list(self.dynamic.request("get", self._path(plural, namespace, group=group), **params).to_dict().get("items") or [])

    def annotate(self, plural: str, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        self.dynamic.request("patch", self._path(plural, namespace, name), body={"metadata": {"annotations": annotations}},
                             content_type=MERGE_PATCH)


def _status_at(obj: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    value: Any = (obj or {}).get("status") or {}
    for key in path:
        value = (value or {}).get(key)
    return value


def _view(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    md = cluster.get("modeldeployments", namespace, name)
    if md is None:
        return None
    policies = [p for p in cluster.items("driftpolicies", namespace) if ((p.get("spec") or {}).get("targetRef") or {}).get("name") == name]
    involved = {name, *(p["metadata"]["name"] for p in policies)}
    events = [e for e in cluster.items("events", namespace, group="v1") if (e.get("involvedObject") or {}).get("name") in involved
              and (e.get("involvedObject") or {}).get("kind") in ("ModelDeployment", "DriftPolicy")]
    return rollout(md, policies, events, datetime.datetime.now(datetime.timezone.utc))


def _get(cluster: Cluster, args: argparse.Namespace) -> int:
    last = None
    while True:
        view = _view(cluster, args.namespace, args.name)
        if view is None:
            print(f"kubectl-modelwarden: modeldeployment {args.namespace}/{args.name} not found", file=sys.stderr)
            return 2
        shown = json.dumps(view) if args.output == "json" else render_rollout(view)
        comparable = json.dumps({k: v for k, v in view.items() if k != "events"} | {"events": [e["message"] for e in view["events"]]})
        if comparable != last:
            if last is not None and args.output != "json":
                print("---")
            print(shown, flush=True)
            last = comparable
        if not args.watch:
            return 0
        time.sleep(args.interval)


def _found(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any] | None:
    """The ModelDeployment named, or None after saying it does not exist."""
    md = cluster.get("modeldeployments", args.namespace, args.name)
    if md is None:
        print(f"kubectl-modelwarden: modeldeployment {args.namespace}/{args.name} not found", file=sys.stderr)
    return md


def _history(cluster: Cluster, args: argparse.Namespace) -> int:
    if (md := _found(cluster, args)) is None:
        return 2
    entries = history(md)
    print(json.dumps(entries) if args.output == "json" else render_history(entries, md))
    return 0


def export_spec(cluster: Cluster, args: argparse.Namespace) -> int:
    """Print the merge patch for spec.stable (YAML, or JSON with -o json); nothing when spec already names what serves."""
    if (md := _found(cluster, args)) is None:
        return 2
    patch = spec_patch(md)
    if patch is None:
        print(f"{args.namespace}/{args.name}: spec.stable already names what serves (no SpecBehind)", file=sys.stderr)
        return 0
    if args.output == "json":
        print(json.dumps(patch))
    else:
        import yaml

        print(f"# kubectl patch modeldeployment {args.name} -n {args.namespace} --type merge --patch-file <this file>")
        print(yaml.safe_dump(patch, sort_keys=False).rstrip())
    return 0


def _wait(cluster: Cluster, plural: str, namespace: str, name: str, acknowledged, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        obj = cluster.get(plural, namespace, name)
        if obj is not None and acknowledged(obj):
            return obj
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def _request(cluster: Cluster, args: argparse.Namespace) -> int:
    """Set the request's annotation to a new value and wait until status acknowledges it."""
    kind = "promote-full" if args.command == "promote" and args.full else args.command
    plural, what = ("driftpolicies", "driftpolicy") if kind == "evaluate-now" else ("modeldeployments", "modeldeployment")
    if cluster.get(plural, args.namespace, args.name) is None:
        print(f"kubectl-modelwarden: {what} {args.namespace}/{args.name} not found", file=sys.stderr)
        return 2
    if kind in ("pause", "resume"):
        pausing = kind == "pause"
        cluster.annotate(plural, args.namespace, args.name, {PAUSED_ANNOTATION: "true" if pausing else None})
        done = _wait(cluster, plural, args.namespace, args.name, lambda o: bool(_status_at(o, ("paused",))) == pausing, args.timeout)
        request = f"{PAUSED_ANNOTATION}={'true' if pausing else '(removed)'}"
    else:
        annotation, path = (EVALUATE_ANNOTATION, ("evaluateToken",)) if kind == "evaluate-now" else REQUESTS[kind]
        token = f"{int(time.time())}-{secrets.token_hex(3)}"
        cluster.annotate(plural, args.namespace, args.name, {annotation: token})
        done = _wait(cluster, plural, args.namespace, args.name, lambda o: _status_at(o, path) == token, args.timeout)
        request = f"{annotation}={token}"
    if done is None:
        print(f"kubectl-modelwarden: {request} set, but not acknowledged within {args.timeout:g}s (is the operator running?)",
              file=sys.stderr)
        return 1
    status = done.get("status") or {}
    ignored = (status.get("requests") or {}).get("ignored") or ""
    mine = next((part for part in ignored.split("; ") if part.startswith(f"{request}:")), None)
    if kind not in ("pause", "resume", "evaluate-now") and mine is not None:
        why = mine[len(request) + 1:].strip()
        if args.output == "json":
            print(json.dumps({"request": request, "acknowledged": True, "ignored": why, "status": status}))
        else:
            print(f"kubectl-modelwarden: {request}: acknowledged, but nothing was done: {why}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps({"request": request, "acknowledged": True, "status": status}))
    elif kind == "evaluate-now":
        last = status.get("lastEvaluation") or {}
        print(f"{request}: acknowledged; {what} {args.name} evaluated: {last.get('verdict')} ({status.get('phase')})")
        for result in last.get("results") or []:
            print(f"  {SYMBOL.get(result.get('verdict'), '·')} {result.get('check')}: {result.get('verdict')} {result.get('message', '')}".rstrip())
    else:
        print(f"{request}: acknowledged; {what} {args.name} is {status.get('phase')}"
              f"{' — ' + status['message'] if status.get('message') else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Accepted before and after the command (`kubectl modelwarden -n ml get fraud`, `... get fraud -n ml`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                        help="namespace (default: the kubeconfig context's, else default)")
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    common.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS, help="table (default) or json")
    parser = argparse.ArgumentParser(prog="kubectl modelwarden", description=__doc__.split("\n\n")[0], parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    get = commands.add_parser("get", help="a ModelDeployment's rollout: tracks, step, gates, recent Events", parents=[common])
    get.add_argument("name")
    get.add_argument("-w", "--watch", action="store_true", help="keep showing it as it changes")
    get.add_argument("--interval", type=float, default=2.0, help="seconds between looks with --watch")
    commands.add_parser("history", help="the stable versions, newest last, with lineage and candidates",
                        parents=[common]).add_argument("name")
    commands.add_parser("export-spec", help="the spec patch to commit when stable serves what spec does not name (SpecBehind)",
                        parents=[common]).add_argument("name")
    for name, text in (("promote", "the current step is done: advance now (--full: promote to stable now)"),
                       ("abort", "roll the canary back now"), ("pause", "hold the canary's steps"),
                       ("resume", "release a paused canary"), ("approve", "approve the current step (approval: required)"),
                       ("retry", "start a rolled-back canary over"), ("evaluate-now", "evaluate a DriftPolicy at once")):
        sub = commands.add_parser(name, help=text, parents=[common])
        sub.add_argument("name", metavar="POLICY" if name == "evaluate-now" else "NAME")
        sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the operator's acknowledgement")
        if name == "promote":
            sub.add_argument("--full", action="store_true", help="promote to stable now, skipping the remaining steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for option, default in (("namespace", None), ("kubeconfig", None), ("context", None), ("output", "table")):
        setattr(args, option, getattr(args, option, default))
    try:
        cluster = Cluster(args.kubeconfig, args.context)
    except Exception as exc:  # noqa: BLE001 - no usable kubeconfig: one line, like kubectl
        print(f"kubectl-modelwarden: no usable kubeconfig: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return 2
    args.namespace = args.namespace or cluster.default_namespace
    try:
        if args.command == "get":
            return _get(cluster, args)
        if args.command == "history":
            return _history(cluster, args)
        if args.command == "export-spec":
            return export_spec(cluster, args)
        return _request(cluster, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - an API error: one line, not a traceback
        print(f"kubectl-modelwarden: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
