"""Stand-ins for what the API emulator and the tests do not run: the cluster's own controllers
(Kubelet) and a Prometheus-API backend whose answers a test controls (FakePrometheus)."""

from __future__ import annotations

import json
import threading
import time

from tests.receivers import LoopbackHttpServer, QuietHandler


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


class FakePrometheus(LoopbackHttpServer):
    """Answers /api/v1/query like Prometheus, as told: ``value`` (one series), ``empty`` (no series),
    ``error`` (HTTP 500), ``slow`` (answers after ``delay`` seconds), or not at all after stop()."""

    def __init__(self, mode: str = "value", value: float = 0.0, delay: float = 0.0) -> None:
        self.mode, self.value, self.delay = mode, value, delay
        self.queries: list[str] = []
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                fake.queries.append(self.path)
                if fake.mode == "slow":
                    time.sleep(fake.delay)
                if fake.mode == "error":
                    return self._answer(500, {"status": "error", "errorType": "internal", "error": "boom"})
                result = [] if fake.mode == "empty" else [{"metric": {}, "value": [time.time(), repr(float(fake.value))]}]
                self._answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

            do_POST = do_GET  # noqa: N815

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

        self.serve(Handler)
