"""The sandbox scenario of `modelwarden demo`: the whole loop on one machine, with no cluster.

It starts the API emulator, a local S3 API (moto_server, sandbox/objectstore.py) holding the two
model versions, a real Prometheus, the operator, a kubelet stand-in that fetches each model from
the store as the pods' storage initializer would (s3:// URIs, credentials from the Secret named by
spec.storage.secretRef) and runs a real `modelwarden serve` process for every Deployment the
operator creates, a traffic generator that sends predictions and ground truth, and a local alert
receiver. Scenario: the stable version
serves; a canary is added and advances while its DriftPolicy passes; drift is injected into the
canary's traffic; the policy fails, the operator rolls the canary back, alerts and launches a
retraining Job. It prints live progress and returns a summary with the Events, which the command
prints (as JSON with `--json`). Every process it starts is stopped on the way out.

``--control-plane real`` runs the same scenario against a real etcd + kube-apiserver +
kube-controller-manager (built by ``make control-plane``; see sandbox/controlplane.py): real
admission, server-side apply, watches, garbage collection and the Job controller. The kubelet
stand-in still plays the Deployment controller's part, since it is what runs the model servers
as local processes.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from modelwarden.contract.kubernetes import API_VERSION
from modelwarden.sandbox import datagen
from modelwarden.sandbox.apiserver import EmulatedApiServer, default_crd_dir
from modelwarden.sandbox.examples import train_example
from modelwarden.sandbox.kubelet import ProcessKubelet
from modelwarden.sandbox.narration import decision_trail, deployment_words, policy_words
from modelwarden.sandbox.objectstore import ObjectStore
from modelwarden.sandbox.processes import free_port
from modelwarden.sandbox.prometheus import PrometheusServer
from modelwarden.sandbox.receiver import AlertReceiver
from modelwarden.sandbox.traffic import TrafficGenerator

NAMESPACE = "sandbox"
NAME = "fraud"
POLICY = "fraud-canary-gate"
WEBHOOK_SECRET = "sandbox-signing-key"
BUCKET = "modelwarden-demo"
STORE_SECRET = "model-store"
DRIFT = datagen.Drift(shift={"amount": 1.5, "merchant_risk": 1.5}, label_noise=0.45)
ANNOUNCED = frozenset({"CanaryStarted", "CanaryStepAdvanced", "CanaryAborted", "RetrainLaunched"})


@dataclass(frozen=True)
class Pace:
    """How fast the scenario runs: policy interval/window, canary step pause, traffic."""

    interval: str
    window: str
    pause: str
    min_samples: int
    rows_per_second: int

    @classmethod
    def named(cls, speed: str) -> "Pace":
        if speed == "max":
            return cls(interval="2s", window="20s", pause="4s", min_samples=150, rows_per_second=300)
        if speed == "fast":
            return cls(interval="3s", window="30s", pause="8s", min_samples=200, rows_per_second=250)
        return cls(interval="5s", window="45s", pause="15s", min_samples=300, rows_per_second=200)


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.pace = Pace.named(args.speed)
        self.deadline = time.monotonic() + args.duration
        self.started = time.monotonic()
        self.json = args.json
        self.keep = getattr(args, "keep", False)
        self.control_plane, self.kube_bin = args.control_plane, args.kube_bin
        self.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mw-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.milestones: list[tuple[float, str]] = []
        self.session = requests.Session()
        self._last_line = ""

    # -- output -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=sys.stderr if self.json else sys.stdout, flush=True)

    def milestone(self, text: str) -> None:
        self.milestones.append((round(time.monotonic() - self.started, 1), text))
        self.say(f"== {text}")

    # -- API helpers ---------------------------------------------------------------------------
    def url(self, plural: str, name: str = "", group: str = API_VERSION) -> str:
        prefix = "/api/v1" if group == "v1" else f"/apis/{group}"
        return f"{self.api_url}{prefix}/namespaces/{NAMESPACE}/{plural}" + (f"/{name}" if name else "")

    def get(self, plural: str, name: str, group: str = API_VERSION) -> dict[str, Any]:
        response = self.session.get(self.url(plural, name, group), timeout=5)
        return response.json() if response.ok else {}

    def items(self, plural: str, group: str) -> list[dict[str, Any]]:
        return self.session.get(self.url(plural, group=group), timeout=5).json().get("items", [])

    def create(self, plural: str, body: dict[str, Any], group: str = API_VERSION) -> None:
        self.session.post(self.url(plural, group=group), json=body, timeout=5).raise_for_status()

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> None:
        self.session.patch(self.url(plural, name), json=body, timeout=5,
                           headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()

    # -- the scenario --------------------------------------------------------------------------
    def run(self, report=None) -> dict[str, Any]:
        """The scenario, then its summary (given to `report`); with --keep everything stays up,
        to be explored with kubectl, until SIGINT or SIGTERM."""
        with ExitStack() as stack:
            self.start_everything(stack)
            self.scenario()
            summary = self.summary()
            if report is not None:
                report(summary)
            if self.keep:
                self.keep_running()
            return summary

    def keep_running(self) -> None:
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        out = sys.stderr if self.json else sys.stdout
        print(f"\nThe sandbox keeps running (Ctrl-C stops it):\n"
              f"  export KUBECONFIG={self.kubeconfig}\n"
              f"  kubectl get mdep,dpol -n {NAMESPACE}\n"
              f"  kubectl modelwarden get {NAME} -n {NAMESPACE} --watch\n"
              f"  kubectl modelwarden retry {NAME} -n {NAMESPACE}      # start the canary over\n"
              f"  logs: {self.workdir}", file=out, flush=True)
        while not stop.wait(1.0):
            if self.operator.poll() is not None:
                self.say(f"the operator exited with {self.operator.returncode}; see {self.workdir}/operator.log")
                return

    def start_everything(self, stack: ExitStack) -> None:
        self.say(f"working in {self.workdir}")
        self.start_store(stack, self.train_models())
        kubeconfig = self.kubeconfig = self.start_api(stack)
        self.prometheus = PrometheusServer(workdir=self.workdir / "prometheus")
        self.prometheus.start()
        stack.callback(self.prometheus.stop)
        self.receiver = AlertReceiver(WEBHOOK_SECRET).start()
        stack.callback(self.receiver.stop)
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        operator_log = (self.workdir / "operator.log").open("wb")
        stack.callback(operator_log.close)
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "modelwarden", "run", "-A", "--prometheus-url", self.prometheus.url,
             "--liveness", liveness, "--reconcile-interval", "0.5", "--metrics-port", str(free_port()),
             "--scrape-interval", self.prometheus.scrape_interval],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=operator_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(self.stop_operator)
        self.kubelet = ProcessKubelet(self.api_url, self.prometheus, self.workdir, session=self.new_session()).start()
        stack.callback(self.kubelet.stop)
        self.traffic = self.make_traffic().start()
        stack.callback(self.traffic.stop)
        self.wait("operator live", lambda: requests.get(liveness, timeout=1).ok)

    def extra_crds(self) -> list[dict[str, Any]]:
        """Kinds the scenario needs besides ours (none: its router is replicas)."""
        return []

    def train_models(self) -> dict[str, Any]:
        models = {version: train_example("classifier", self.workdir / "models" / version, seed=seed)
                  for version, seed in (("1", 7), ("2", 8))}
        # Comparing the canary with the stable track needs the same bucket edges on both: the new
        # version is served with the stable version's reference profile (see docs/statistics.md).
        models["2"].profile.write_text(models["1"].profile.read_text())
        return models

    def make_traffic(self) -> TrafficGenerator:
        return TrafficGenerator(NAME, self.servers, self.weights, rows_per_second=self.pace.rows_per_second)

    def start_store(self, stack: ExitStack, models: dict[str, Any]) -> None:
        """The models where they live on a cluster: in a bucket, read with a key that may only read it."""
        if importlib.util.find_spec("moto") is None:
            raise SystemExit("the demo's S3 store needs moto_server: pip install 'modelwarden[sandbox]'")
        self.store = ObjectStore(self.workdir / "s3").start()
        stack.callback(self.store.stop)
        self.store.create_bucket(BUCKET)
        self.model_uris = {}
        for version, example in models.items():
            self.store.upload(BUCKET, f"{NAME}/{version}/{example.profile.name}", example.profile)
            self.model_uris[version] = self.store.upload(BUCKET, f"{NAME}/{version}/{example.model.name}", example.model)
        self.store_env = self.store.env(self.store.reader(BUCKET))
        self.say(f"models in s3://{BUCKET} on {self.store.url}")

    def start_api(self, stack: ExitStack) -> Path:
        """The API server the operator talks to; returns the operator's kubeconfig."""
        extra = self.workdir / "extra-crds"
        extra.mkdir(exist_ok=True)
        for crd in self.extra_crds():
            (extra / f"{crd['metadata']['name']}.yaml").write_text(json.dumps(crd))
        if self.control_plane == "emulator":
            api = EmulatedApiServer(extra_crd_dirs=(extra,)).start()
            stack.callback(api.stop)
            self.api_url = api.url
            self.new_session = requests.Session
            return api.write_kubeconfig(self.workdir / "kubeconfig")
        from modelwarden.sandbox.controlplane import ControlPlane
        from modelwarden.sandbox.controlplane_admin import crd_documents
        from modelwarden.sandbox.controlplane_binaries import ControlPlaneNotInstalled

        try:
            # No Deployment or ReplicaSet controller: the kubelet stand-in reports Deployment status.
            plane = ControlPlane(bin_dir=self.kube_bin, workdir=self.workdir / "control-plane", with_controller_manager=False,
                                 controllers=("garbage-collector-controller", "job-controller", "serviceaccount-controller",
                                              "namespace-controller"))
        except ControlPlaneNotInstalled as error:
            raise SystemExit(f"--control-plane real: {error}") from None
        plane.start()
        stack.callback(plane.stop)
        plane.install_crds([*crd_documents(default_crd_dir()), *self.extra_crds()])
        plane.create_namespace(NAMESPACE)
        plane.start_controller_manager()
        self.say(f"control plane {plane.version} ready in {plane.startup_seconds:.1f}s")
        self.api_url = plane.url
        self.new_session = plane.session  # one per thread: requests sessions are not thread-safe
        self.session = plane.session()
        return plane.kubeconfig_path

    def stop_operator(self) -> None:
        if self.operator.poll() is None:
            self.operator.send_signal(signal.SIGTERM)
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                self.operator.kill()

    def servers(self) -> dict[str, Any]:
        return {track: server for track in ("stable", "canary")
                if (server := self.kubelet.server_for(NAMESPACE, f"{NAME}-{track}")) is not None}

    def weights(self) -> dict[str, int]:
        return self.get("modeldeployments", NAME).get("status", {}).get("weights", {})

    def scenario(self) -> None:
        self.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook-signing", "labels": {"modelwarden.io/policy-use": "true"}},
                                "data": {"secret": base64.b64encode(WEBHOOK_SECRET.encode()).decode()}}, group="v1")
        self.create("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORE_SECRET},
                                "data": {k: base64.b64encode(v.encode()).decode() for k, v in self.store_env.items()}}, group="v1")
        self.create("modeldeployments", self.modeldeployment())
        self.create("driftpolicies", self.policy())
        self.wait("stable serving", lambda: self.status().get("phase") == "Stable")
        self.milestone(f"stable {self.status()['stable']['version']} serving")
        self.wait("stable metrics in Prometheus", lambda: self.prometheus.query(
            f'modelwarden_predictions_total{{model="{NAME}",track="stable"}}'))
        self.patch("modeldeployments", NAME, {"spec": {"canary": self.canary()}})
        self.milestone("canary 2 added: 20% -> 50% -> 80%")
        self.wait("canary step 2", lambda: self.status().get("canaryStep") == 1)
        self.milestone("canary advanced to step 2 (50%) on passing evaluations")
        self.traffic.drift["canary"] = DRIFT
        self.milestone("drift injected into the canary's traffic (features shifted 1.5σ, 45% labels noisy)")
        self.wait("canary rolled back", lambda: self.status().get("phase") == "RolledBack")
        self.milestone(f"canary rolled back: {self.status()['rollback']['reason']}")
        self.wait("retraining Job", lambda: self.items("jobs", "batch/v1"))
        self.milestone(f"retraining Job {self.items('jobs', 'batch/v1')[0]['metadata']['name']} created")
        self.wait("alert delivered", lambda: self.receiver.received)
        self.milestone(f"alert delivered to the local webhook receiver (signature valid: {self.receiver.received[0]['signatureValid']})")
        # An Event is posted just after the decision it announces is persisted: the summary waits for it.
        self.wait("the loop's Events", lambda: ANNOUNCED <= {e.get("reason") for e in self.items("events", "v1")})

    def status(self) -> dict[str, Any]:
        return self.get("modeldeployments", NAME).get("status", {})

    def wait(self, what: str, probe) -> None:
        while time.monotonic() < self.deadline:
            self.progress()
            try:
                if probe():
                    return
            except (requests.RequestException, KeyError, ValueError):
                pass
            if self.operator.poll() is not None:
                raise SystemExit(f"the operator exited with {self.operator.returncode}; see {self.workdir}/operator.log")
            time.sleep(0.5)
        snapshot = {"modeldeployment": self.get("modeldeployments", NAME), "driftpolicy": self.get("driftpolicies", POLICY),
                    "events": self.items("events", "v1")}
        (self.workdir / "state.json").write_text(json.dumps(snapshot, indent=2))
        raise SystemExit(f"timed out waiting for: {what} (logs and state.json in {self.workdir})")

    def progress(self) -> None:
        """One line in words whenever the rollout's or the gate's state changes."""
        md, policy = self.get("modeldeployments", NAME), self.get("driftpolicies", POLICY)
        phase = (md.get("status") or {}).get("phase") or "Pending"
        line = f"[{phase}] {deployment_words(md)} | {policy_words(policy)}"
        if line != self._last_line:
            self._last_line = line
            self.say(line)

    # -- resources -----------------------------------------------------------------------------
    def modeldeployment(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {"model": NAME, "stable": {"version": "1", "modelUri": self.model_uris["1"], "replicas": 4},
                         "storage": {"secretRef": {"name": STORE_SECRET}}, "traffic": {"router": "replicas"}}}

    def canary(self) -> dict[str, Any]:
        return {"version": "2", "modelUri": self.model_uris["2"], "replicas": 1,
                "steps": [{"weight": w, "pause": self.pace.pause} for w in (20, 50, 80)]}

    def policy(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION, "kind": "DriftPolicy", "metadata": {"name": POLICY, "namespace": NAMESPACE},
            "spec": {
                "targetRef": {"name": NAME}, "track": "canary", "interval": self.pace.interval, "window": self.pace.window,
                "minSamples": self.pace.min_samples, "failureThreshold": 2, "reference": {"track": "stable"},
                "drift": {}, "performance": [{"metric": "accuracy", "min": 0.7}],
                "actions": {
                    "rollback": True,
                    "alert": {"webhook": {"url": self.receiver.url, "hmacSecretRef": {"name": "webhook-signing", "key": "secret"}}},
                    "retrain": {"cooldown": "1h", "jobTemplate": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                        {"name": "train", "image": "ghcr.io/example/fraud-trainer:1.0", "args": ["--model", NAME]}]}}}},
                },
            },
        }

    # -- summary -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        status = self.status()
        jobs = self.items("jobs", "batch/v1")
        events = sorted(self.items("events", "v1"), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        job_env = {e["name"]: e.get("value") for e in jobs[0]["spec"]["template"]["spec"]["containers"][0].get("env", [])} if jobs else {}
        result = {
            "rolledBack": status.get("phase") == "RolledBack",
            "rollback": status.get("rollback"),
            "stableVersion": (status.get("stable") or {}).get("version"),
            "history": status.get("history", []),
            "jobs": [j["metadata"]["name"] for j in jobs],
            "jobEnv": {k: v for k, v in job_env.items() if k.startswith("MODELWARDEN_")},
            "alertsReceived": len(self.receiver.received),
            "alertSignaturesValid": all(a["signatureValid"] for a in self.receiver.received),
            "milestones": [{"at": at, "what": what} for at, what in self.milestones],
            "decisionTrail": decision_trail(self.get("driftpolicies", POLICY), events),
            "events": [{"object": e.get("involvedObject", {}).get("name"), "type": e.get("type"),
                        "reason": e.get("reason"), "message": e.get("message")} for e in events],
            "requests": dict(self.traffic.stats.requests),
            "modelStore": {"endpoint": self.store.url, "bucket": BUCKET, "fetches": [
                {"deployment": f.deployment, "version": f.version, "uri": f.uri, "ok": f.ok} for f in self.kubelet.fetches]},
            "durationSeconds": round(time.monotonic() - self.started, 1),
        }
        return result
