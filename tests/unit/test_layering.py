"""Pure layers (planning, analysis, builders) never import kopf, kubernetes, requests or aiohttp."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.validation import ROOT


def test_import_linter_contract_holds():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is a test dependency"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken" in result.stdout


def test_contract_covers_the_pure_layers():
    text = (ROOT / "pyproject.toml").read_text()
    for module in ("modelwarden.planning", "modelwarden.analysis", "modelwarden.builders"):
        assert f'"{module}"' in text
    for forbidden in ("kopf", "kubernetes", "requests", "aiohttp"):
        assert f'"{forbidden}"' in text
