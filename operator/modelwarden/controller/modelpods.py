"""Why a track's pods do not start: the storage initializer's termination message, read from the
Pod status of a track that is not rolled out (condition ModelFetchFailed). Pods are listed by
label only while a track's rollout is incomplete, so a settled ModelDeployment costs no request."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from modelwarden.builders.workloads import FETCH_CONTAINER, PAIRED_FETCH_CONTAINER
from modelwarden.contract.kubernetes import INSTANCE_LABEL
from modelwarden.kube.api import KubeApi, describe_error
from modelwarden.planning.types import ObservedTrack

MESSAGE_LIMIT = 300
logger = logging.getLogger(__name__)


# The storage initializers: the track's model, and the stable's beside a paired shadow's (said so).
_FETCHERS = {FETCH_CONTAINER: "", PAIRED_FETCH_CONTAINER: "the stable's model (pairWithStable): "}


def fetch_failure(pod: Mapping[str, Any]) -> str | None:
    """A storage initializer's one-line error, if it ended in failure (now or before a restart)."""
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") not in _FETCHERS:
            continue
        prefix = _FETCHERS[status["name"]]
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CreateContainerConfigError":  # e.g. the store Secret does not exist
            return (f"{prefix}CreateContainerConfigError: "
                    f"{waiting.get('message') or 'the container cannot be configured'}")[:MESSAGE_LIMIT]
        for state in ((status.get("state") or {}).get("terminated"), (status.get("lastState") or {}).get("terminated")):
            if state and int(state.get("exitCode") or 0) != 0:
                text = (state.get("message") or state.get("reason") or f"exit code {state.get('exitCode')}").strip()
                return (prefix + (" ".join(text.splitlines()[-1:]) or f"exit code {state.get('exitCode')}"))[:MESSAGE_LIMIT]
    return None


def fetch_failures(kube: KubeApi, namespace: str, name: str, observed: Mapping[str, ObservedTrack]) -> dict[str, str]:
    """Per track not rolled out: why its current version's model could not be fetched. Pods that
    cannot be listed (RBAC not upgraded, the API failing) say nothing: the decision goes on."""
    failures: dict[str, str] = {}
    for track, seen in observed.items():
        if seen.version is None or seen.replicas == 0 or seen.ready_for(seen.version, seen.replicas):
            continue
        selector = f"{INSTANCE_LABEL}={name},track={track},version={seen.version}"
        try:
            pods = kube.list("v1", "Pod", namespace, selector)
        except Exception as exc:  # noqa: BLE001 - a missing reason, never a failed reconcile
            logger.warning("%s/%s: cannot list the %s pods (%s): ModelFetchFailed not checked", namespace, name, track,
                           describe_error(exc))
            continue
        for pod in pods:
            message = fetch_failure(pod)
            if message:
                failures[track] = message
                break
    return failures
