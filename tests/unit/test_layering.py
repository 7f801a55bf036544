"""The package's shape: layers that never import upwards, pure layers without I/O libraries,
and modules small enough to read whole (docs/architecture.md)."""

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
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_contract_covers_the_pure_layers():
    text = (ROOT / "pyproject.toml").read_text()
    for module in ("modelwarden.planning", "modelwarden.analysis", "modelwarden.builders"):
        assert f'"{module}"' in text
    for forbidden in ("kopf", "kubernetes", "requests", "aiohttp"):
        assert f'"{forbidden}"' in text


def test_the_layers_contract_names_every_package_top_down():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'type = "layers"' in text and "exhaustive = true" in text
    order = ["commands", "sandbox", "controller | serving", "notifiers | prometheus | kube | storage | registry", "planning",
             "routers | analysis", "builders", "api | retry", "contract"]
    positions = [text.index(f'"{layer}"') for layer in order]
    assert positions == sorted(positions)


def test_no_module_is_longer_than_400_lines():
    long = {str(path.relative_to(ROOT)): n for path in (ROOT / "operator").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}
