"""`modelwarden demo`: the sandbox runs the whole loop with real processes and cleans up."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import require_binary
from tests.controlplane.support import KUBE_BIN, missing


@pytest.mark.timeout(240)
@pytest.mark.parametrize("control_plane", ["emulator", "real"])
def test_demo_rolls_back_the_drifted_canary_and_reports_it(tmp_path, control_plane):
    require_binary("prometheus")
    if control_plane == "real" and not (KUBE_BIN / "kube-apiserver").exists():
        missing(f"kube-apiserver not found in {KUBE_BIN}")
    result = subprocess.run(
        [sys.executable, "-m", "modelwarden", "demo", "--json", "--speed", "max", "--duration", "180",
         "--workdir", str(tmp_path), "--control-plane", control_plane, "--kube-bin", str(KUBE_BIN)],
        capture_output=True, text=True, timeout=220,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["rolledBack"] is True
    assert summary["rollback"]["track"] == "canary" and summary["rollback"]["fromVersion"] == "2"
    assert summary["stableVersion"] == "1"
    assert len(summary["jobs"]) == 1
    assert summary["jobEnv"]["MODELWARDEN_MODEL"] == "fraud" and summary["jobEnv"]["MODELWARDEN_TRACK"] == "canary"
    assert summary["alertsReceived"] >= 1 and summary["alertSignaturesValid"] is True
    reasons = {e["reason"] for e in summary["events"]}
    assert {"CanaryStarted", "CanaryStepAdvanced", "CanaryAborted", "RetrainLaunched"} <= reasons
    # Drift comes after the first advance: the failing policy never lets the canary advance again, and
    # the rollback acts on the threshold's evaluation (failureThreshold 2) or at most one more.
    assert [e["reason"] for e in summary["events"]].count("CanaryStepAdvanced") == 1
    assert re.search(r"failed [23]x", summary["rollback"]["reason"]), summary["rollback"]
    assert summary["requests"]["stable"] > 0 and summary["requests"]["canary"] > 0
    # Both versions were served from the local S3 API, fetched with the storage Secret's key.
    store = summary["modelStore"]
    fetched = [(f["deployment"], f["version"], f["uri"]) for f in store["fetches"] if f["ok"]]
    assert fetched[:2] == [("fraud-stable", "1", f"s3://{store['bucket']}/fraud/1/model.joblib"),
                           ("fraud-canary", "2", f"s3://{store['bucket']}/fraud/2/model.joblib")]
    assert all(f["ok"] for f in store["fetches"])
    milestones = [m["what"] for m in summary["milestones"]]
    assert milestones[0].startswith("stable 1 serving") and milestones[-1].startswith("alert delivered")
    if control_plane == "real":
        assert re.search(r"control plane v1\.\d+\.\d+ ready", result.stderr), result.stderr[:2000]
    # Every process the demo started is gone (model servers, Prometheus, the operator, the control plane).
    assert processes_mentioning(str(tmp_path)) == []
    assert "Progressing" in result.stderr and "RolledBack" in result.stderr  # live progress was shown


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose arguments or environment mention `text`
    (the operator only has the work dir in its KUBECONFIG)."""
    found = []
    for process in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            command = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environment = (process / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in command or text in environment:
            found.append(command)
    return found
