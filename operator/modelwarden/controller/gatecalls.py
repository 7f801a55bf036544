"""Asking a ModelDeployment's webhook gates: the I/O half of planning/webhookgates.py.

Each reconcile hands over the gates that wait (from persisted status) and gets back the latest
answer of each; the POSTs themselves run on a pool of their own, never on the reconcile threads, so
a slow gate delays no decision (its answer is used by a later reconcile). A gate is asked again
only after its `interval`. Answers are kept in memory: after a restart the waiting gates are asked
again (a passed gate is in status and never asked again). Destinations obey the operator's
--allowed-alert-hosts; redirects are not followed (they could lead anywhere), and a receiver's
answer is summarised by its status code only (its body could hold anything)."""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

from modelwarden.api.deploymentstatus import ModelDeploymentStatus
from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.api.webhookgates import WebhookGate
from modelwarden.kube.api import KubeApi, describe_error
from modelwarden.kube.secrets import opted_in_secret_reader
from modelwarden.notifiers.webhook import SIGNATURE_HEADER, signature
from modelwarden.planning.egress import EgressRules
from modelwarden.planning.webhookgates import GateAnswer, context, waiting

logger = logging.getLogger(__name__)
KEPT_ANSWERS = 2000
CALLERS = 4
Key = tuple[str, str, str, str]  # ModelDeployment uid, canary version, gate, when it began to wait


class GateCaller:
    """Shared by the reconcile threads."""

    def __init__(self, kube: KubeApi, egress: EgressRules) -> None:
        self.kube, self.egress = kube, egress
        self._answers: dict[Key, GateAnswer] = {}
        self._asked: dict[Key, float] = {}  # when a call was last started (monotonic)
        self._in_flight: set[Key] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=CALLERS, thread_name_prefix="webhook-gate")

    def answers(self, md: ModelDeployment, status: ModelDeploymentStatus) -> dict[str, GateAnswer]:
        """The latest answer of every gate that waits; starts a call for those not asked within their interval."""
        if status.canary is None:
            return {}
        found = {}
        for gate in waiting(md, status):
            state = next(s for s in status.gates if s.name == gate.name and s.version == status.canary.version)
            key = (md.metadata.get("uid", ""), status.canary.version, gate.name, str(state.waiting_since))
            with self._lock:
                if key in self._answers:
                    found[gate.name] = self._answers[key]
                due = key not in self._in_flight and time.monotonic() - self._asked.get(key, -1e18) >= gate.interval.total_seconds()
                if due:
                    self._in_flight.add(key)
                    self._asked[key] = time.monotonic()
            if due:
                self._pool.submit(self._call, key, md, status, gate)
        return found

    def _call(self, key: Key, md: ModelDeployment, status: ModelDeploymentStatus, gate: WebhookGate) -> None:
        try:
            answer = self._ask(md, status, gate, key[1])
        except Exception as exc:  # noqa: BLE001 - whatever went wrong holds the gate and says so
            logger.warning("webhook gate %s of %s/%s: %s", gate.name, md.metadata.get("namespace"), md.metadata.get("name"),
                           describe_error(exc))
            answer = GateAnswer(gate.name, key[1], _now(), None, f"cannot ask: {describe_error(exc)}"[:200])
        with self._lock:
            self._answers[key] = answer
            self._in_flight.discard(key)
            if len(self._answers) > KEPT_ANSWERS:  # bounded: the oldest answers go first
                for stale in sorted(self._answers, key=lambda k: self._answers[k].at)[:KEPT_ANSWERS // 4]:
                    del self._answers[stale]
                    self._asked.pop(stale, None)

    def _ask(self, md: ModelDeployment, status: ModelDeploymentStatus, gate: WebhookGate, version: str) -> GateAnswer:
        host = urlsplit(gate.url).hostname or "(no host)"
        refusal = self.egress.alert_refusal(gate.url)
        if refusal:
            return GateAnswer(gate.name, version, _now(), None, refusal)
        headers = {"Content-Type": "application/json"}
        body = json.dumps(context(md, status, gate), separators=(",", ":")).encode()
        if gate.hmac_secret_ref is not None:
            try:
                secret = opted_in_secret_reader(self.kube, md.metadata.get("namespace", "default"))(
                    gate.hmac_secret_ref.name, gate.hmac_secret_ref.key)
            except LookupError as exc:
                return GateAnswer(gate.name, version, _now(), None, f"cannot sign: {exc}")
            headers[SIGNATURE_HEADER] = signature(secret.encode(), body, int(time.time()))
        timeout = gate.timeout.total_seconds()
        try:
            response = requests.post(gate.url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
        except requests.Timeout:
            return GateAnswer(gate.name, version, _now(), None, f"no answer from {host} within {timeout:g}s")
        except requests.RequestException as exc:
            return GateAnswer(gate.name, version, _now(), None, f"{type(exc).__name__}: cannot reach {host}")
        response.close()
        return GateAnswer(gate.name, version, _now(), response.status_code, f"HTTP {response.status_code} from {host}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
