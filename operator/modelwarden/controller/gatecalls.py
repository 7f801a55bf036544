"""Asking a ModelDeployment's webhook gates: the I/O half of planning/webhookgates.py.

Before each decision the reconcile asks the gates that wait (from persisted status) with one POST
of the rollout's context, signed like the alert webhook when the gate names a Secret; a gate is
asked again only after its `interval`, so a reconcile every second does not hammer it. Answers are
kept in memory: after a restart the waiting gates are simply asked again (a passed gate is in
status and never asked again). Destinations obey the operator's --allowed-alert-hosts."""

from __future__ import annotations

import datetime
import json
import threading
import time
from urllib.parse import urlsplit

import requests

from modelwarden.api.deploymentstatus import ModelDeploymentStatus
from modelwarden.api.modeldeployment import ModelDeployment
from modelwarden.api.webhookgates import WebhookGate
from modelwarden.kube.api import KubeApi
from modelwarden.kube.secrets import opted_in_secret_reader
from modelwarden.notifiers.webhook import SIGNATURE_HEADER, signature
from modelwarden.planning.egress import EgressRules
from modelwarden.planning.webhookgates import GateAnswer, context, waiting

KEPT_ANSWERS = 2000


class GateCaller:
    """Shared by the reconcile threads: answers by (ModelDeployment uid, canary version, gate)."""

    def __init__(self, kube: KubeApi, egress: EgressRules) -> None:
        self.kube, self.egress = kube, egress
        self._answers: dict[tuple[str, str, str], GateAnswer] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()

    def answers(self, md: ModelDeployment, status: ModelDeploymentStatus, canary_ready: bool) -> dict[str, GateAnswer]:
        """The latest answer of every gate that waits, asking those not asked within their interval."""
        if status.canary is None:
            return {}
        uid, version = md.metadata.get("uid", ""), status.canary.version
        found = {}
        for gate in waiting(md, status, canary_ready):
            key = (uid, version, gate.name)
            with self._lock:
                last = self._answers.get(key)
            if last is None or _now() - last.at >= gate.interval:
                last = self._ask(md, status, gate, version)
                with self._lock:
                    self._answers[key] = last
                    if len(self._answers) > KEPT_ANSWERS:  # bounded: the oldest answers go first
                        for stale in sorted(self._answers, key=lambda k: self._answers[k].at)[:KEPT_ANSWERS // 4]:
                            del self._answers[stale]
            found[gate.name] = last
        return found

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
            response = self._session.post(gate.url, data=body, headers=headers, timeout=timeout)
        except requests.Timeout:
            return GateAnswer(gate.name, version, _now(), None, f"no answer from {host} within {timeout:g}s")
        except requests.RequestException as exc:
            return GateAnswer(gate.name, version, _now(), None, f"{type(exc).__name__}: cannot reach {host}")
        said = " ".join(response.text.split())[:120]
        return GateAnswer(gate.name, version, _now(), response.status_code,
                          f"HTTP {response.status_code} from {host}" + (f": {said}" if said else ""))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
