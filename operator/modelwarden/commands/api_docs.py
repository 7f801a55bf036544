"""`modelwarden api-docs`: print, write or check docs/api.md, the API reference that
:mod:`modelwarden.api.docs` renders from the typed models."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from modelwarden.api.docs import render

DEFAULT_OUTPUT = Path("docs/api.md")


def configure(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the reference to --output")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff when --output is stale")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file (default: ./docs/api.md)")


def run(args: argparse.Namespace) -> int:
    text = render()
    if args.write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}")
        return 0
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), str(args.output), f"{args.output} (generated)"))
            print("the API reference is stale: run `modelwarden api-docs --write`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0
