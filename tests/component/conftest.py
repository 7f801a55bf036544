"""Stand-ins for the cluster's own controllers, which the API emulator does not run."""

from __future__ import annotations

import threading

import pytest


class Kubelet:
    """Marks every Deployment rolled out and ready (what the deployment controller and kubelet do)."""

    def __init__(self, kube, interval: float = 0.2) -> None:
        self.kube, self.interval = kube, interval
        self.paused: set[str] = set()  # Deployments left unready
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # the emulator may be shutting down
                pass

    def sync(self) -> None:
        for deployment in self.kube.list("deployments", namespace=None):
            name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
            if name in self.paused:
                continue
            replicas = deployment["spec"].get("replicas", 1)
            wanted = {"observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
                      "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas}
            if {k: (deployment.get("status") or {}).get(k) for k in wanted} != wanted:
                self.kube.patch("deployments", name, {"status": wanted}, namespace, subresource="status")

    def start(self) -> "Kubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def kubelet(kube):
    simulator = Kubelet(kube).start()
    yield simulator
    simulator.stop()
