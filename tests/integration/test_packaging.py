"""The wheel the Dockerfile builds installs into a fresh venv and its entry points work.

This mirrors the Dockerfile's build stage without a Docker engine: copy exactly the build
context the image uses (pyproject.toml, README.md, operator/ — see .dockerignore), `pip wheel
--no-deps` it, install the wheel into a new venv (dependencies from PyPI or the pip cache) and run
the commands the image's ENTRYPOINT/CMD and the operator's model pods run.

It needs PyPI (or a warm pip cache) and takes ~20-40 s with a warm cache (the first run on a
machine downloads numpy/scipy/scikit-learn and takes longer), hence its generous timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.validation import ROOT

pytestmark = pytest.mark.timeout(600)

# What the Dockerfile COPYs into its build stage (and .dockerignore lets through).
BUILD_CONTEXT = ("pyproject.toml", "README.md", "operator")


def _run(*cmd: str, cwd=None, env=None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, wheel path, clean env) for the wheel installed into a fresh venv."""
    work = tmp_path_factory.mktemp("packaging")
    context = work / "context"
    context.mkdir()
    for name in BUILD_CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(source, context / name)

    # A clean environment: nothing from this checkout or the project venv may leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    wheels = work / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(context), env=env)
    (wheel,) = wheels.glob("modelwarden-*.whl")

    venv = work / "venv"
    _run(sys.executable, "-m", "venv", str(venv), env=env)
    bin_dir = venv / "bin"
    _run(str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel), env=env, timeout=540)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return bin_dir, wheel, env


def test_wheel_contains_the_package_and_its_data(installed):
    _, wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "modelwarden/cli.py" in names
    assert "modelwarden/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "operator/"))], "only the import package ships"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "modelwarden = modelwarden.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_package_is_imported_from_the_venv_not_the_checkout(installed, tmp_path):
    bin_dir, _, env = installed
    out = _run(str(bin_dir / "python"), "-c", "import modelwarden; print(modelwarden.__file__)", cwd=tmp_path, env=env)
    assert str(bin_dir.parent) in out.stdout and str(ROOT / "operator") not in out.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--help"], "run"),
        (["run", "--help"], "--liveness"),
        (["serve", "--help"], "MODEL_URI"),
        (["crds", "--check", "--dir", str(ROOT / "crds")], ""),
        (["api-docs", "--check", "--output", str(ROOT / "docs" / "api.md")], ""),
    ],
    ids=["help", "run-help", "serve-help", "crds-check", "api-docs-check"],
)
def test_entrypoint_commands(installed, tmp_path, args, expected):
    """The image's ENTRYPOINT is `modelwarden`; these are the commands its pods run (or --help of them)."""
    bin_dir, _, env = installed
    out = _run(str(bin_dir / "modelwarden"), *args, cwd=tmp_path, env=env, timeout=120)
    assert expected in out.stdout

