"""The operator's kopf registry, built explicitly from its configuration: nothing registers by
being imported, and intervals and the shard travel in the config, not the environment.

Also the handlers every resource shares: settings, connections, the spec check, the probe."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import kopf
from pydantic import ValidationError

from modelwarden.api.driftpolicy import DriftPolicySpec
from modelwarden.api.modeldeployment import ModelDeploymentSpec
from modelwarden.contract.kubernetes import DRIFTPOLICIES, GROUP, MODELDEPLOYMENTS
from modelwarden.controller import driftpolicies, modeldeployments, podmonitors, telemetry
from modelwarden.controller.config import OperatorConfig
from modelwarden.controller.resolution import Resolver
from modelwarden.controller.gatecalls import GateCaller
from modelwarden.controller.memo import Memo, Wakeups
from modelwarden.controller.podmonitors import PodMonitorSupport
from modelwarden.controller.status import spec_status_patch
from modelwarden.kube.api import KubeApi, StaleView
from modelwarden.kube.fence import WriteFence, write_status
from modelwarden.prometheus.client import ProviderPool


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """Every handler the operator runs, for this configuration."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)  # as the API client does: in-cluster, else kubeconfig
    kopf.on.startup(registry=registry)(configure_settings)
    kopf.on.startup(registry=registry)(connect)
    kopf.on.cleanup(registry=registry)(disconnect)
    kopf.on.probe(id="now", registry=registry)(liveness_time)
    for resource, handler in ((MODELDEPLOYMENTS, modeldeployment_spec), (DRIFTPOLICIES, driftpolicy_spec)):
        kopf.on.resume(*resource, when=config.owns, registry=registry)(handler)
        kopf.on.create(*resource, when=config.owns, registry=registry)(handler)
        kopf.on.update(*resource, field="spec", when=config.owns, registry=registry)(handler)
    kopf.on.delete(*MODELDEPLOYMENTS, optional=True, when=config.owns, registry=registry)(forget_modeldeployment_metrics)
    modeldeployments.register(registry, config)
    driftpolicies.register(registry, config)
    if config.pod_monitors != "off":  # only then: with `off` the operator needs no access to PodMonitors at all
        podmonitors.register(registry)
    return registry


def configure_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our CRDs have structural schemas with no room for kopf's own status fields, so kopf keeps its
    # progress and diff-base in annotations under our prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = 20  # INFO and above become Kubernetes Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def connect(memo: Memo, **_: Any) -> None:
    memo.kube = KubeApi()
    memo.fence = WriteFence()
    memo.wakeups = Wakeups()
    memo.prometheus = ProviderPool(outcome=telemetry.record_query)
    memo.pod_monitors = PodMonitorSupport(memo.kube, memo.config.pod_monitors, labels=memo.config.pod_monitor_labels)
    memo.resolver = Resolver(memo.config, memo.kube)
    memo.gates = GateCaller(memo.kube, memo.config.egress)
    if memo.config.pod_monitors == "off":
        logging.getLogger(__name__).info("PodMonitors off (--pod-monitors=off): none are watched or written")
    else:
        memo.pod_monitors.check()  # at startup, then again every few minutes (controller/podmonitors.py)
    telemetry.serve(memo.config.metrics_port, memo.config.metrics_address)


def disconnect(memo: Memo, **_: Any) -> None:
    memo.prometheus.close()


def liveness_time(**_: Any) -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _validate(
    model: type, failed_phase: str, body: Any, generation: int | None, memo: Memo,
    problems: Callable[[Any], list[str]] = lambda spec: [],
) -> None:
    """Record the spec's validity in status; an invalid spec is a permanent error, not a retry.

    Only an invalid spec is written here: a valid object's status belongs to its loop alone, so
    two writers never race over the conditions list. The write is conditional like every status
    write (a 409 retries the handler on a fresh view).
    """
    try:
        error = "; ".join(problems(model.model_validate(dict(body.get("spec") or {})))) or None
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


def modeldeployment_spec(body: Any, meta: Any, memo: Memo, **_: Any) -> None:
    _validate(ModelDeploymentSpec, "Failed", body, meta.get("generation"), memo)


def driftpolicy_spec(body: Any, meta: Any, memo: Memo, **_: Any) -> None:
    _validate(DriftPolicySpec, "Error", body, meta.get("generation"), memo,
              lambda spec: spec.scrape_problems(memo.config.scrape_interval))


def forget_modeldeployment_metrics(namespace: str, name: str, uid: str, memo: Memo, **_: Any) -> None:
    telemetry.forget_modeldeployment(namespace, name)
    memo.fence.forget(uid)
