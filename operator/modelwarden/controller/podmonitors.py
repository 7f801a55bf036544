"""PodMonitors for ModelDeployments: whether to want them, and the index of the ones that exist.

`--pod-monitors=auto` (the default) wants one PodMonitor per ModelDeployment while the cluster
serves `monitoring.coreos.com/v1` PodMonitor (the prometheus-operator's CRD is installed). That is
asked of API discovery at startup and then at most every `RECHECK_SECONDS`, from whichever
reconcile comes first after that (so installing kube-prometheus-stack later needs no restart, and
a removed CRD stops the operator wanting PodMonitors). `--pod-monitors=off` never wants one, and
the index below is not even registered: the operator neither watches nor writes PodMonitors.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from modelwarden.builders.podmonitor import API_VERSION, KIND
from modelwarden.contract.kubernetes import INSTANCE_LABEL, MANAGED_BY
from modelwarden.kube.api import KubeApi, describe_error

RECHECK_SECONDS = 300.0  # discovery again, either way, at most this often
ERROR_RETRY_SECONDS = 30.0  # after discovery itself failed
logger = logging.getLogger(__name__)


class PodMonitorSupport:
    """Whether reconciles want a PodMonitor: the operator's mode and what discovery last said.

    Shared by the reconcile threads (a lock guards the rare discovery request)."""

    def __init__(self, kube: KubeApi | None, mode: str = "auto", clock: Callable[[], float] = time.monotonic,
                 recheck: float = RECHECK_SECONDS, labels: Mapping[str, str] | None = None) -> None:
        self.kube, self.mode, self.clock, self.recheck = kube, mode, clock, recheck
        self.labels = dict(labels or {})  # extra labels, e.g. the release label a Prometheus selects PodMonitors by
        self.served: bool | None = None  # None: not asked yet, or discovery failed before it ever answered
        self._next_check = 0.0
        self._lock = threading.Lock()

    def check(self) -> bool | None:
        """Ask discovery now (None: it failed and never answered before); logs when the answer changes."""
        with self._lock:
            return self._check()

    def wanted(self) -> bool | None:
        """True or False; None while discovery has never answered (then existing PodMonitors are
        left as they are, neither updated nor pruned)."""
        if self.mode == "off" or self.kube is None:
            return False
        if self.clock() >= self._next_check:
            with self._lock:
                if self.clock() >= self._next_check:  # another thread may have asked meanwhile
                    self._check()
        return self.served

    def _check(self) -> bool | None:
        assert self.kube is not None
        try:
            served = self.kube.serves(API_VERSION, KIND)
        except Exception as exc:  # the API failing: keep the last answer, ask again soon
            self._next_check = self.clock() + ERROR_RETRY_SECONDS
            logger.warning("could not tell whether the cluster serves %s %s (%s); asking again in %.0fs",
                           KIND, API_VERSION, describe_error(exc), ERROR_RETRY_SECONDS)
            return self.served
        self._next_check = self.clock() + self.recheck
        if served != self.served:
            if served:
                logger.info("the cluster serves %s %s: a PodMonitor per ModelDeployment", KIND, API_VERSION)
            else:
                logger.info("the cluster does not serve %s %s (no prometheus-operator CRD): no PodMonitors; "
                            "asking again every %.0fs", KIND, API_VERSION, self.recheck)
        self.served = served
        return served


def child_podmonitors(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any] | None:
    """The operator's PodMonitors by the ModelDeployment they belong to (like child_deployments)."""
    if INSTANCE_LABEL not in labels:
        return None
    return {(namespace, labels[INSTANCE_LABEL]): copy.deepcopy(dict(body))}


def register(registry: kopf.OperatorRegistry) -> None:
    """The PodMonitor index (not registered with --pod-monitors=off). kopf watches the kind once its CRD exists."""
    group, version = API_VERSION.split("/")
    kopf.index(group, version, "podmonitors", labels=MANAGED_BY, registry=registry)(child_podmonitors)
