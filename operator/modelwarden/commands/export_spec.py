"""`modelwarden export-spec NAME`: the spec patch that lets Git catch up with the operator.

After the closed loop promotes a candidate, stable serves a version spec.stable does not name
(condition SpecBehind). The operator never writes the user's spec; this prints the merge patch to
commit (or to `kubectl patch --type merge`), and nothing when the spec is already current.
"""

from __future__ import annotations

import argparse
import sys

from modelwarden.commands.kubectl_plugin import Cluster, export_spec


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the ModelDeployment")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="yaml (default) or json")


def run(args: argparse.Namespace) -> int:
    try:
        cluster = Cluster(args.kubeconfig, args.context)
    except Exception as exc:  # noqa: BLE001 - no usable kubeconfig: one line
        print(f"modelwarden export-spec: no usable kubeconfig: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return 2
    args.namespace = args.namespace or cluster.default_namespace
    try:
        return export_spec(cluster, args)
    except Exception as exc:  # noqa: BLE001 - an API error: one line, not a traceback
        print(f"modelwarden export-spec: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return 1
