"""The `modelwarden` command line.

Each subcommand lives in its own module of modelwarden.commands, named after it, exposing
``configure(parser)`` and ``run(args) -> int``. Only the chosen subcommand's module is imported,
so `modelwarden serve` never pays for kopf and `modelwarden crds` never pays for scikit-learn.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add a line here to add a subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("modelwarden.commands.run", "run the operator (kopf) against the current cluster"),
    "crds": ("modelwarden.commands.crds", "print, write or check the CRDs generated from the typed API"),
    "api-docs": ("modelwarden.commands.api_docs", "print, write or check docs/api.md, the API reference generated from the typed API"),
    "demo": ("modelwarden.commands.demo", "run the embedded sandbox scenario on this machine"),
    "evaluate": ("modelwarden.commands.evaluate", "evaluate a DriftPolicy once against Prometheus and print every check"),
    "backtest": ("modelwarden.commands.backtest", "replay a DriftPolicy over past Prometheus data: when it would have acted, its false alarms"),
    "serve": ("modelwarden.commands.serve", "serve a joblib/scikit-learn model with the metrics contract"),
    "profile": ("modelwarden.commands.profile", "build a reference profile from training data"),
    "history": ("modelwarden.commands.history", "a DriftPolicy's evaluation history, printed or as TensorBoard event files"),
    "export-spec": ("modelwarden.commands.export_spec", "print the spec patch that makes spec.stable name what serves (SpecBehind)"),
    "fetch-model": ("modelwarden.commands.fetch_model", "download a model artifact (s3, gs, https, MLflow) into a directory: the pods' storage initializer"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelwarden", description=__doc__.splitlines()[0])
    from modelwarden import __version__

    parser.add_argument("--version", action="version", version=f"modelwarden {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
