"""Helpers for the tests that keep generated artifacts (CRDs, docs/api.md) in step with the typed models."""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from types import ModuleType
from typing import Any


def run_quietly(command: ModuleType, **args: Any) -> tuple[int, str]:
    """(exit code, stdout) of a CLI module's ``run`` with these arguments; stderr is discarded."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        code = command.run(argparse.Namespace(**args))
    return code, out.getvalue()


@contextmanager
def changed_description(model: Any, field: str, text: str) -> Iterator[None]:
    """The pydantic model's field documented as ``text`` for the duration, as if someone edited it."""
    info = model.model_fields[field]
    original = info.description
    info.description = text
    model.model_rebuild(force=True)
    try:
        yield
    finally:
        info.description = original
        model.model_rebuild(force=True)
