"""`modelwarden demo --scenario closed-loop`: the maintenance loop with no person in it.

The same sandbox as the canary scenario (sandbox/demo.py: API emulator or real control plane,
Prometheus, real model servers, the operator, traffic), plus the sandbox's Job kubelet
(sandbox/jobrunner.py) running a real training program (sandbox/retrain.py). Scenario: stable 1
serves; the world drifts (every request's features shift); the stable DriftPolicy breaches and
launches one retraining Job; the program trains 2 on fresh data and reports it in its termination
message; 2 runs in shadow on mirrored traffic, passes the label-free gate (its predictions against
stable's on the same requests), advances as a canary and is promoted, with its lineage; the
spec still names 1 (SpecBehind), and `modelwarden export-spec` would print the patch. No MLflow
server here (it takes half a minute to start): the tests run the MLflow path.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from typing import Any

from modelwarden.contract.kubernetes import API_VERSION
from modelwarden.sandbox import datagen
from modelwarden.sandbox.demo import NAME, NAMESPACE, Demo
from modelwarden.sandbox.examples import train_example
from modelwarden.sandbox.jobrunner import JobRunner
from modelwarden.sandbox.narration import deployment_words
from modelwarden.sandbox.traffic import TrafficGenerator

STABLE_POLICY, SHADOW_GATE, CANARY_GATE = "fraud-stable-drift", "fraud-shadow-gate", "fraud-canary-gate"
SHIFT = {"amount": 1.5, "merchant_risk": 1.5}
ANNOUNCED = frozenset({"RetrainLaunched", "CandidateStarted", "CandidateAdvanced", "CanaryStarted", "CandidatePromoted"})


class ClosedLoopDemo(Demo):
    def start_everything(self, stack: ExitStack) -> None:
        super().start_everything(stack)
        # The emulator runs no controllers: the runner plays the Job controller there.
        self.jobs = JobRunner(self.api_url, self.workdir, session=self.new_session(),
                              job_controller=self.control_plane == "emulator").start()
        stack.callback(self.jobs.stop)

    def start_store(self, stack: ExitStack, models: dict[str, Any]) -> None:
        """Models on local disk (file://): the retraining program writes its model beside stable's."""
        self.model_uris = {version: example.directory.as_uri() for version, example in models.items()}

    def extra_crds(self) -> list[dict[str, Any]]:
        """Mirroring needs a mesh router; the sandbox's mesh is the traffic generator, which splits and
        mirrors by status.weights. The VirtualService kind is registered without a schema of its own
        (the tests validate the operator's VirtualServices against Istio's published CRD)."""
        return [{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": "virtualservices.networking.istio.io"},
                 "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                          "names": {"plural": "virtualservices", "singular": "virtualservice", "kind": "VirtualService",
                                    "listKind": "VirtualServiceList"},
                          "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                              "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}]

    def make_traffic(self) -> TrafficGenerator:
        """Traffic that also mirrors each request to the shadow, as the mesh would."""
        return TrafficGenerator(NAME, self.servers, self.weights, rows_per_second=self.pace.rows_per_second,
                                mirrors=lambda: {"shadow": self.weights().get("mirror", 0)})

    def train_models(self) -> dict[str, Any]:
        return {"1": train_example("classifier", self.workdir / "models" / "1", seed=7)}

    def servers(self) -> dict[str, Any]:
        return {track: server for track in ("stable", "canary", "shadow")
                if (server := self.kubelet.server_for(NAMESPACE, f"{NAME}-{track}")) is not None}

    def scenario(self) -> None:
        profile = (self.workdir / "models" / "1" / "profile.json").read_text()
        self.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fraud-profile"},
                                   "data": {"profile.json": profile}}, group="v1")
        self.create("modeldeployments", self.modeldeployment())
        for policy in self.policies():
            self.create("driftpolicies", policy)
        self.wait("stable serving", lambda: self.status().get("phase") == "Stable")
        self.milestone(f"stable {self.status()['stable']['version']} serving; spec.candidates: shadow -> canary -> stable")
        self.traffic.drift = {"stable": datagen.Drift(shift=SHIFT), "canary": datagen.Drift(shift=SHIFT)}
        self.milestone("the world drifts: amount and merchant_risk shift 1.5σ on every request")
        self.wait("retraining Job", lambda: self.items("jobs", "batch/v1"))
        self.milestone(f"stable breached: retraining Job {self.items('jobs', 'batch/v1')[0]['metadata']['name']} created")
        self.wait("candidate in shadow", lambda: (self.status().get("candidate") or {}).get("stage") == "shadow")
        self.milestone(f"the Job reported {self.status()['candidate']['modelUri']}: candidate "
                       f"{self.status()['candidate']['version']} in shadow on mirrored traffic")
        self.wait("candidate a canary", lambda: (self.status().get("candidate") or {}).get("stage") == "canary")
        self.milestone("the label-free shadow gate passed: the candidate is a canary")
        self.wait("candidate promoted", lambda: (self.status().get("stable") or {}).get("lineage"))
        self.milestone(f"candidate {self.status()['stable']['version']} promoted to stable; spec.stable still names 1 (SpecBehind)")
        self.wait("the loop's Events", lambda: ANNOUNCED <= {e.get("reason") for e in self.items("events", "v1")})

    def progress(self) -> None:
        md = self.get("modeldeployments", NAME)
        status = md.get("status") or {}
        candidate = status.get("candidate") or {}
        line = (f"[{status.get('phase') or 'Pending'}] {deployment_words(md)}"
                + (f" | candidate {candidate['version']} in {candidate['stage']}" if candidate else ""))
        if line != self._last_line:
            self._last_line = line
            self.say(line)

    def modeldeployment(self) -> dict[str, Any]:
        window_pause = self.pace.pause
        return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {"model": NAME, "stable": {"version": "1", "modelUri": self.model_uris["1"], "replicas": 2},
                         "traffic": {"router": "istio"},
                         "candidates": {"shadow": {"policy": SHADOW_GATE, "duration": window_pause},
                                        "canary": {"steps": [{"weight": 30, "pause": window_pause}, {"weight": 60, "pause": window_pause}]},
                                        "autoPromote": True, "cooldown": "1h"}}}

    def policies(self) -> list[dict[str, Any]]:
        trainer = [sys.executable, "-m", "modelwarden.sandbox.retrain", "--rows", "3000",
                   "--shift", ",".join(f"{k}={v}" for k, v in SHIFT.items()), "--output", str(self.workdir / "models")]
        window = self.closed_loop_window()

        def policy(name: str, track: str, drift: dict[str, Any], **spec: Any) -> dict[str, Any]:
            return {"apiVersion": API_VERSION, "kind": "DriftPolicy", "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"targetRef": {"name": NAME}, "track": track, "interval": self.pace.interval, "window": window,
                             "minSamples": self.pace.min_samples, "failureThreshold": 2, "drift": drift, **spec}}

        return [
            policy(STABLE_POLICY, "stable", {"method": "psi", "threshold": 0.2},
                   reference={"profileRef": {"configMap": {"name": "fraud-profile", "key": "profile.json"}}},
                   actions={"retrain": {"cooldown": "1h", "jobTemplate": {"backoffLimit": 0, "template": {"spec": {
                       "containers": [{"name": "train", "image": "ghcr.io/example/fraud-trainer:1.0", "command": trainer}]}}}}}),
            # Label-free: its predictions' distribution against stable's, and their agreement row by row.
            policy(SHADOW_GATE, "shadow", {}, reference={"track": "stable"}, agreement={"minRate": 0.98}),
            policy(CANARY_GATE, "canary", {}, reference={"track": "stable"}, actions={"rollback": True}),
        ]

    def closed_loop_window(self) -> str:
        """Short windows: each stage waits for one window of evidence from after it began."""
        return {"2s": "8s", "3s": "12s"}.get(self.pace.interval, "20s")

    def summary(self) -> dict[str, Any]:
        status = self.status()
        events = sorted(self.items("events", "v1"), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return {
            "scenario": "closed-loop",
            "stableVersion": (status.get("stable") or {}).get("version"),
            "specStableVersion": self.get("modeldeployments", NAME).get("spec", {}).get("stable", {}).get("version"),
            "specBehind": next((c["status"] == "True" for c in status.get("conditions", []) if c["type"] == "SpecBehind"), False),
            "history": status.get("history", []),
            "candidates": status.get("candidates", []),
            "jobs": [j["metadata"]["name"] for j in self.items("jobs", "batch/v1")],
            "jobRuns": [{"job": r.job, "exitCode": r.exit_code, "result": r.message} for r in self.jobs.runs],
            "milestones": [{"at": at, "what": what} for at, what in self.milestones],
            "events": [{"object": e.get("involvedObject", {}).get("name"), "type": e.get("type"),
                        "reason": e.get("reason"), "message": e.get("message")} for e in events],
            "requests": dict(self.traffic.stats.requests),
            "mirrored": self.traffic.stats.mirrored,
            "durationSeconds": round(time.monotonic() - self.started, 1),
        }
