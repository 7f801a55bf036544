"""What every `modelwarden fetch-model` test checks of a failure, once."""

from __future__ import annotations

import subprocess
from pathlib import Path


def failed_line(result: subprocess.CompletedProcess[str], dest: Path) -> str:
    """A failed fetch: exit 1, one line on stderr (nothing on stdout), the same line as the
    termination message, and nothing left in DEST (the pod's emptyDir, which exists before the fetch)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fetch-model: ")
    assert (dest.parent / "termination-log").read_text() == lines[0]
    assert list(dest.rglob("*")) == []
    assert result.stdout == ""
    return lines[0]


def empty_dest(tmp_path: Path) -> Path:
    """DEST as the pod has it: an existing, empty directory."""
    directory = tmp_path / "model"
    directory.mkdir()
    return directory
