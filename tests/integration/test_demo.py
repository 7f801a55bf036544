"""`modelwarden demo`: the sandbox runs the whole loop with real processes and cleans up."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import require_binary
from tests.controlplane.support import KUBE_BIN, missing


def run_demo(tmp_path, control_plane: str, *extra: str) -> subprocess.CompletedProcess:
    """`modelwarden demo --json --speed max` on this control plane (the real one only once built)."""
    require_binary("prometheus")
    if control_plane == "real" and not (KUBE_BIN / "kube-apiserver").exists():
        missing(f"kube-apiserver not found in {KUBE_BIN}")
    return subprocess.run(
        [sys.executable, "-m", "modelwarden", "demo", *extra, "--json", "--speed", "max", "--duration", "180",
         "--workdir", str(tmp_path), "--control-plane", control_plane, "--kube-bin", str(KUBE_BIN)],
        capture_output=True, text=True, timeout=220,
    )


@pytest.mark.timeout(240)
@pytest.mark.parametrize("control_plane", ["emulator", "real"])
def test_demo_rolls_back_the_drifted_canary_and_reports_it(tmp_path, control_plane):
    result = run_demo(tmp_path, control_plane)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["rolledBack"] is True
    assert summary["rollback"]["track"] == "canary" and summary["rollback"]["fromVersion"] == "2"
    assert summary["stableVersion"] == "1"
    assert len(summary["jobs"]) == 1
    assert summary["jobEnv"]["MODELWARDEN_MODEL"] == "fraud" and summary["jobEnv"]["MODELWARDEN_TRACK"] == "canary"
    assert summary["alertsReceived"] == 1 and summary["alertSignaturesValid"] is True  # one alert for one breach
    reasons = {e["reason"] for e in summary["events"]}
    assert {"CanaryStarted", "CanaryStepAdvanced", "CanaryAborted", "RetrainLaunched"} <= reasons
    # Drift comes after the first advance: the failing policy never lets the canary advance again, and
    # the rollback acts on the threshold's evaluation (failureThreshold 2) or at most one more.
    assert [e["reason"] for e in summary["events"]].count("CanaryStepAdvanced") == 1
    assert re.search(r"failed [23]x", summary["rollback"]["reason"]), summary["rollback"]
    trail = [step["what"] for step in summary["decisionTrail"]]
    assert "evaluation" in trail and trail.index("CanaryAborted") > trail.index("evaluation")
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


@pytest.mark.timeout(240)
@pytest.mark.parametrize("control_plane", ["emulator", "real"])
def test_demo_closed_loop_retrains_and_promotes_with_lineage(tmp_path, control_plane):
    result = run_demo(tmp_path, control_plane, "--scenario", "closed-loop")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["stableVersion"] == "2" and summary["specStableVersion"] == "1" and summary["specBehind"] is True
    (job,) = summary["jobs"]
    assert summary["jobRuns"] == [{"job": job, "exitCode": 0, "result": json.dumps(
        {"modelUri": (tmp_path / "models" / "2").as_uri(), "version": "2"})}]
    (first, promoted) = summary["history"]
    lineage = promoted["lineage"]
    assert (first["version"], promoted["version"], lineage["job"], lineage["parentVersion"]) == ("1", "2", job, "1")
    assert [g["stage"] for g in lineage["gates"]] == ["shadow", "canary"] and all(g["verdict"] == "Pass" for g in lineage["gates"])
    assert [(c["version"], c["outcome"]) for c in summary["candidates"]] == [("2", "Promoted")]
    assert summary["mirrored"] > 0 and summary["requests"]["canary"] > 0
    reasons = [e["reason"] for e in summary["events"]]
    for reason in ("RetrainLaunched", "RetrainResult", "CandidateStarted", "CandidateAdvanced", "CandidatePromoted"):
        assert reasons.count(reason) == 1, (reason, reasons)
    assert processes_mentioning(str(tmp_path)) == []


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


@pytest.mark.timeout(300)
def test_demo_keep_leaves_a_sandbox_to_explore_with_kubectl_modelwarden(tmp_path):
    """--keep: after the scenario the sandbox stays up with a KUBECONFIG; `kubectl modelwarden get
    --watch` follows a retried canary live, the emulator serves `kubectl get` Tables; Ctrl-C cleans up."""
    import signal
    import threading
    import time

    import requests
    import yaml

    require_binary("prometheus")
    demo = subprocess.Popen([sys.executable, "-m", "modelwarden", "demo", "--json", "--speed", "max", "--duration", "180", "--keep",
                             "--workdir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(demo.stderr.readline, "")), daemon=True).start()
    plugin = [str(pathlib.Path(sys.executable).parent / "kubectl-modelwarden")]
    try:
        deadline = time.monotonic() + 220
        while not any("export KUBECONFIG=" in line for line in lines) and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        kubeconfig = next(line.split("export KUBECONFIG=")[1].strip() for line in lines if "export KUBECONFIG=" in line)
        plugin += ["--kubeconfig", kubeconfig, "-n", "sandbox"]
        view = json.loads(subprocess.run([*plugin, "get", "fraud", "-o", "json"], capture_output=True, text=True, timeout=60).stdout)
        assert view["phase"] == "RolledBack" and view["tracks"]["stable"]["version"] == "1"
        assert any(e["reason"] == "CanaryAborted" for e in view["events"])
        server = yaml.safe_load(pathlib.Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
        table = requests.get(f"{server}/apis/modelwarden.io/v1alpha1/namespaces/sandbox/modeldeployments",
                             headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, timeout=10).json()
        assert table["rows"][0]["cells"][:3] == ["fraud", "False", "RolledBack"]  # Ready=False: the spec's canary is refused

        watch = subprocess.Popen([*plugin, "get", "fraud", "--watch", "--interval", "0.5", "-o", "json"],
                                 stdout=subprocess.PIPE, text=True)
        try:
            phases = [json.loads(watch.stdout.readline())["phase"]]
            retried = subprocess.run([*plugin, "retry", "fraud"], capture_output=True, text=True, timeout=90)
            assert retried.returncode == 0 and "acknowledged" in retried.stdout, retried.stderr
            while phases[-1] != "Progressing" and len(phases) < 50:
                phases.append(json.loads(watch.stdout.readline())["phase"])
            assert phases[0] == "RolledBack" and phases[-1] == "Progressing", phases  # seen live, as it changed
        finally:
            watch.kill()
            watch.wait(10)
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
    assert code == 0, "".join(lines)[-3000:]
    assert json.loads(demo.stdout.read())["rolledBack"] is True
    assert processes_mentioning(str(tmp_path)) == []
