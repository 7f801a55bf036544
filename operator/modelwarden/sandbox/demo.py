"""`modelwarden demo`: the embedded sandbox on one machine, with no cluster.

Today it starts the API emulator and the real operator, applies the examples, and shows what
the operator recorded for each. The full scenario (real Prometheus, model-server processes,
traffic, a canary rolled back on drift, alerts and a retraining Job) grows here with the
controller issues.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from modelwarden import API_VERSION
from modelwarden.sandbox.apiserver import EmulatedApiServer
from modelwarden.sandbox.prometheus import free_port

PLURALS = {"ModelDeployment": "modeldeployments", "DriftPolicy": "driftpolicies"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", type=Path, default=None, help="folder of example manifests (default: examples/)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the operator")


def _examples_dir(given: Path | None) -> Path:
    if given:
        return given
    for candidate in (Path.cwd() / "examples", Path(__file__).resolve().parents[3] / "examples"):
        if candidate.is_dir():
            return candidate
    raise SystemExit("no examples/ folder found; pass --examples")


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="mw-demo-"))
    api = EmulatedApiServer().start()
    kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    operator = subprocess.Popen(
        [sys.executable, "-m", "modelwarden", "run", "-A", "--liveness", liveness],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=(workdir / "operator.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: requests.get(liveness, timeout=1).ok, args.timeout, "operator liveness")
        applied = []
        for path in sorted(_examples_dir(args.examples).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") in PLURALS:
                    ns = doc["metadata"].setdefault("namespace", "default")
                    url = f"{api.url}/apis/{API_VERSION}/namespaces/{ns}/{PLURALS[doc['kind']]}"
                    requests.post(url, json=doc, timeout=5).raise_for_status()
                    applied.append((doc["kind"], ns, doc["metadata"]["name"], url))
        summary = []
        for kind, ns, name, url in applied:
            obj = _wait(lambda: _observed(f"{url}/{name}"), args.timeout, f"{kind} {name}")
            status = obj.get("status", {})
            summary.append({"kind": kind, "namespace": ns, "name": name, "phase": status.get("phase"),
                            "observedGeneration": status.get("observedGeneration")})
        if args.json:
            print(json.dumps({"resources": summary}, indent=2))
        else:
            print(f"{'KIND':<16} {'NAMESPACE':<10} {'NAME':<22} PHASE")
            for row in summary:
                print(f"{row['kind']:<16} {row['namespace']:<10} {row['name']:<22} {row['phase']}")
            print("\nThe operator accepted every example. The full drift/canary scenario comes with the controllers.")
        return 0
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()
        api.stop()


def _observed(url: str) -> dict | None:
    obj = requests.get(url, timeout=5).json()
    return obj if obj.get("status", {}).get("observedGeneration") else None


def _wait(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")
