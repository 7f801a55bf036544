"""`modelwarden crds`: print, write or check the generated CRDs."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from modelwarden.api.crdgen import build_crds, render


def configure(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write one file per CRD into --dir")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff when --dir is stale")
    parser.add_argument("--dir", type=Path, default=Path("crds"), help="CRD directory (default: ./crds)")


def run(args: argparse.Namespace) -> int:
    rendered = {name: render(crd) for name, crd in build_crds().items()}
    if args.write:
        args.dir.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (args.dir / name).write_text(text)
            print(f"wrote {args.dir / name}")
        return 0
    if args.check:
        stale = False
        for name, text in rendered.items():
            path = args.dir / name
            current = path.read_text() if path.exists() else ""
            if current != text:
                stale = True
                sys.stdout.writelines(
                    difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(path), f"{path} (generated)")
                )
        if stale:
            print("crds are stale: run `modelwarden crds --write` (or `make crds`)", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write("---\n".join(rendered.values()))
    return 0
