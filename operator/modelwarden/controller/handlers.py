"""kopf registrations. Handlers stay thin: parse -> decide (pure) -> act -> write status if changed."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from modelwarden import GROUP, VERSION
from modelwarden.api.driftpolicy import DriftPolicySpec
from modelwarden.api.modeldeployment import ModelDeploymentSpec
from modelwarden.controller import driftpolicies  # noqa: F401  (registers the policy loop)
from modelwarden.controller import metrics
from modelwarden.controller import modeldeployments  # noqa: F401  (registers the reconciler)
from modelwarden.controller.config import OperatorConfig, in_this_shard
from modelwarden.controller.modeldeployments import DRIFTPOLICIES, MODELDEPLOYMENTS, Wakeups
from modelwarden.controller.podmonitors import PodMonitorSupport
from modelwarden.controller.status import spec_status_patch
from modelwarden.kube.api import KubeApi, StaleView
from modelwarden.kube.fence import WriteFence, write_status
from modelwarden.metrics.prometheus import ProviderPool


class Memo(kopf.Memo):
    """Operator-wide state shared by handlers (kopf copies it per resource object, shallowly)."""

    config: OperatorConfig
    kube: KubeApi
    fence: WriteFence  # our last status write per object: older views are stale
    wakeups: Wakeups  # run a ModelDeployment's reconcile now
    pod_monitors: PodMonitorSupport  # whether ModelDeployments get a PodMonitor
    prometheus: ProviderPool  # Prometheus clients kept across evaluations (keep-alive connections)


@kopf.on.startup()
def configure_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our CRDs have structural schemas with no room for kopf's own status fields, so kopf keeps its
    # progress and diff-base in annotations under our prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = 20  # INFO and above become Kubernetes Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.startup()
def connect(memo: Memo, **_: Any) -> None:
    memo.kube = KubeApi()
    memo.fence = WriteFence()
    memo.wakeups = Wakeups()
    memo.prometheus = ProviderPool()
    memo.pod_monitors = PodMonitorSupport(memo.kube, memo.config.pod_monitors, labels=memo.config.pod_monitor_labels)
    if memo.config.pod_monitors == "off":
        logging.getLogger(__name__).info("PodMonitors off (--pod-monitors=off): none are watched or written")
    else:
        memo.pod_monitors.check()  # at startup, then again every few minutes (controller/podmonitors.py)
    metrics.serve(memo.config.metrics_port)


@kopf.on.cleanup()
def disconnect(memo: Memo, **_: Any) -> None:
    memo.prometheus.close()


@kopf.on.probe(id="now")
def liveness_time(**_: Any) -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _validate(
    model: type, failed_phase: str, body: Any, generation: int | None, memo: Memo,
) -> None:
    """Record the spec's validity in status; an invalid spec is a permanent error, not a retry.

    Only an invalid spec is written here: a valid object's status belongs to its loop alone, so
    two writers never race over the conditions list. The write is conditional like every status
    write (a 409 retries the handler on a fresh view).
    """
    try:
        model.model_validate(dict(body.get("spec") or {}))
        error = None
    except ValidationError as exc:
        error = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if not error:
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    changes = spec_status_patch(dict(body.get("status") or {}), generation, error, now, failed_phase)
    if changes:
        try:
            write_status(memo.kube, memo.fence, dict(body), changes)
        except StaleView as exc:
            raise kopf.TemporaryError(str(exc), delay=0.5) from exc
    raise kopf.PermanentError(f"invalid spec: {error}")


@kopf.on.resume(*MODELDEPLOYMENTS, when=in_this_shard)
@kopf.on.create(*MODELDEPLOYMENTS, when=in_this_shard)
@kopf.on.update(*MODELDEPLOYMENTS, field="spec", when=in_this_shard)
def modeldeployment_spec(body: Any, meta: Any, memo: Memo, **_: Any) -> None:
    _validate(ModelDeploymentSpec, "Failed", body, meta.get("generation"), memo)


@kopf.on.resume(*DRIFTPOLICIES, when=in_this_shard)
@kopf.on.create(*DRIFTPOLICIES, when=in_this_shard)
@kopf.on.update(*DRIFTPOLICIES, field="spec", when=in_this_shard)
def driftpolicy_spec(body: Any, meta: Any, memo: Memo, **_: Any) -> None:
    _validate(DriftPolicySpec, "Error", body, meta.get("generation"), memo)


@kopf.on.delete(*MODELDEPLOYMENTS, optional=True, when=in_this_shard)
def forget_modeldeployment_metrics(namespace: str, name: str, uid: str, memo: Memo, **_: Any) -> None:
    metrics.forget_modeldeployment(namespace, name)
    memo.fence.forget(uid)
