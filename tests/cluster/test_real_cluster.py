"""Against a real cluster (kind etc.): run with `pytest tests/cluster --kube-config ~/.kube/config`.

The real API server is the authority our offline validators imitate: it must accept the CRDs and
every example, and reject every invalid manifest naming the same field.
"""

import re
import shutil
import subprocess

import pytest

from tests.validation import CRD_DIR, ROOT

INVALID = sorted((ROOT / "tests" / "corpus" / "invalid").glob("*.yaml"))


@pytest.fixture(scope="module")
def kubectl(request):
    binary = shutil.which("kubectl")
    if not binary:
        pytest.fail("kubectl is required for the cluster tier")
    config = request.config.getoption("--kube-config")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, "--kubeconfig", config, *args], capture_output=True, text=True, timeout=120)

    applied = run("apply", "--server-side", "-f", str(CRD_DIR))
    assert applied.returncode == 0, applied.stderr
    run("wait", "--for=condition=Established", "crd/modeldeployments.modelwarden.io", "crd/driftpolicies.modelwarden.io")
    run("create", "namespace", "ml")
    return run


def test_examples_are_accepted(kubectl):
    result = kubectl("apply", "--dry-run=server", "-f", str(ROOT / "examples"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifests_are_rejected_naming_the_field(kubectl, path):
    expected = re.search(r"^# expect: (\S+)$", path.read_text(), re.M).group(1)
    result = kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(path))
    assert result.returncode != 0
    assert expected.split("[")[0].rsplit(".", 1)[-1] in result.stderr
