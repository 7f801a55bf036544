"""Pure builders for retraining: a batch/v1 Job per trigger and a CronJob for spec.retrain.schedule.

Every container (and init container) gets the context as MODELWARDEN_* environment variables;
ours win over same-named variables of the template, so the contract always holds.
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass
from typing import Any

from modelwarden.api.actions import JobTemplate
from modelwarden.api.duration import format_timestamp
from modelwarden.builders.workloads import owner_reference
from modelwarden.contract.kubernetes import MANAGED_BY, POLICY_LABEL, TRIGGER_LABEL


@dataclass(frozen=True)
class PolicyOwner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return owner_reference("DriftPolicy", self.name, self.uid)


@dataclass(frozen=True)
class RetrainContext:
    """What the retraining code is told (the env contract in docs/driftpolicy.md)."""

    model: str
    namespace: str
    track: str
    policy: str
    reason: str
    version: str = ""
    failing_checks: tuple[dict[str, object], ...] = ()
    window_start: datetime.datetime | None = None
    window_end: datetime.datetime | None = None

    def env(self) -> list[dict[str, str]]:
        values = {
            "MODELWARDEN_MODEL": self.model,
            "MODELWARDEN_NAMESPACE": self.namespace,
            "MODELWARDEN_VERSION": self.version,
            "MODELWARDEN_TRACK": self.track,
            "MODELWARDEN_REASON": self.reason,
            "MODELWARDEN_FAILING_CHECKS": json.dumps(list(self.failing_checks), separators=(",", ":")),
            "MODELWARDEN_WINDOW_START": format_timestamp(self.window_start) if self.window_start else "",
            "MODELWARDEN_WINDOW_END": format_timestamp(self.window_end) if self.window_end else "",
            "MODELWARDEN_POLICY": self.policy,
        }
        return [{"name": name, "value": value} for name, value in values.items()]


def retrain_job(owner: PolicyOwner, template: JobTemplate, name: str, trigger: str, context: RetrainContext) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, name, template, trigger),
        "spec": _job_spec(template, context, trigger),
    }


def retrain_cronjob(owner: PolicyOwner, template: JobTemplate, schedule: str, context: RetrainContext) -> dict[str, Any]:
    """One CronJob per policy, named <policy>-retrain (concurrencyPolicy Forbid: at most one run)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(owner, cronjob_name(owner.name), template, "Schedule"),
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"metadata": _metadata(owner, "", template, "Schedule"), "spec": _job_spec(template, context, "Schedule")},
        },
    }


def cronjob_name(policy: str) -> str:
    return f"{policy[:44].rstrip('-.')}-retrain"


def _metadata(owner: PolicyOwner, name: str, template: JobTemplate, trigger: str) -> dict[str, Any]:
    given = template.metadata or {}
    labels = {**(given.get("labels") or {}), **MANAGED_BY, POLICY_LABEL: owner.name, TRIGGER_LABEL: trigger.lower()}
    metadata: dict[str, Any] = {"labels": labels}
    if given.get("annotations"):
        metadata["annotations"] = dict(given["annotations"])
    if name:
        metadata = {"name": name, "namespace": owner.namespace, **metadata, "ownerReferences": [owner.reference()]}
    return metadata


def _job_spec(template: JobTemplate, context: RetrainContext, trigger: str) -> dict[str, Any]:
    pod = copy.deepcopy(template.template)
    pod_spec = pod.setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Never")
    env = [*context.env(), {"name": "MODELWARDEN_TRIGGER", "value": trigger}]
    names = {item["name"] for item in env}
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key) or []:
            container["env"] = [e for e in container.get("env") or [] if e.get("name") not in names] + env
    spec: dict[str, Any] = {"template": pod}
    if template.backoff_limit is not None:
        spec["backoffLimit"] = template.backoff_limit
    if template.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = template.active_deadline_seconds
    if template.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = template.ttl_seconds_after_finished
    return spec
