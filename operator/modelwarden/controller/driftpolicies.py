"""DriftPolicy loop: a level-triggered kopf timer per policy that evaluates when due, decides
(pure: planning.policy), acts (retraining Jobs, CronJob, notifications) and writes status only when
it changed.

Scheduling: kopf timers never overlap for one object (one task per object awaits the handler),
so a slow evaluation delays the next one instead of running beside it. The timer only *ticks*
(every --policy-tick, default 1 s, cheap when nothing is due); whether an evaluation is due comes
from status (lastEvaluation.time + spec.interval), so the cadence survives restarts and a
restarted operator does not evaluate every policy at once. A new policy's first evaluation waits
a uid-derived share of min(interval, 30 s), and ticks start after a uid-derived initial delay, so
1000 policies applied together neither tick nor evaluate together.

Blocking work (Prometheus queries, Kubernetes calls, notifications) runs in bounded thread pools
of its own, so slow backends never starve the ModelDeployment reconciler's threads, and
notifications are sent in the background: a slow receiver never delays a verdict (the rollback
reads the verdict from status).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelwarden.analysis.reference import reference_from_profile
from modelwarden.api.driftpolicy import CheckResult, DriftPolicy, DriftPolicyStatus, Evaluation, Verdict
from modelwarden.builders.jobs import POLICY_LABEL, PolicyOwner, RetrainContext, job_state, retrain_cronjob, retrain_job
from modelwarden.builders.workloads import MANAGED_BY
from modelwarden.controller import metrics
from modelwarden.controller.config import OperatorConfig, in_this_shard, policy_tick
from modelwarden.controller.modeldeployments import DRIFTPOLICIES, MODELDEPLOYMENTS
from modelwarden.controller.status import status_changes
from modelwarden.kube.api import StaleView
from modelwarden.kube.apply import is_subset
from modelwarden.kube.fence import write_status
from modelwarden.metrics.collect import Target, evaluate
from modelwarden.metrics.failfast import FailFastProvider
from modelwarden.metrics.prometheus import PrometheusConfig, ProviderPool
from modelwarden.notifiers import factory
from modelwarden.notifiers.base import SecretReader, deliver
from modelwarden.planning import policy as decide
from modelwarden.planning.notification import AlertContext, Notification
from modelwarden.planning.types import Event

RETRAIN_ANNOTATION = "modelwarden.io/retrain"
NOTIFY_DEADLINE_SECONDS = 30.0
API_RETRY_SECONDS = 1.0  # a failed tick (e.g. the API answering 500) is retried this soon, not after kopf's minute
EVALUATIONS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="policy-eval")
NOTIFICATIONS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="policy-notify")
_background: set[asyncio.Task[None]] = set()  # keeps notification tasks referenced until done
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetInfo:
    model: str
    versions: dict[str, str] = field(default_factory=dict)  # track -> version served (from status)


@kopf.index(*MODELDEPLOYMENTS)
def policy_targets(namespace: str, name: str, spec: Any, status: Any, **_: Any) -> dict[Any, Any] | None:
    if not spec.get("model"):
        return None
    status = dict(status or {})
    versions = {track: status[track]["version"] for track in ("stable", "canary", "shadow")
                if isinstance(status.get(track), dict) and status[track].get("version")}
    return {(namespace, name): TargetInfo(spec["model"], versions)}


@kopf.index("batch", "v1", "jobs", labels={**MANAGED_BY, POLICY_LABEL: kopf.PRESENT})
def retrain_jobs(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[POLICY_LABEL]): job_state(dict(body))}


@kopf.index("batch", "v1", "cronjobs", labels={**MANAGED_BY, POLICY_LABEL: kopf.PRESENT})
def retrain_cronjobs(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[POLICY_LABEL]): dict(body)}


def _initial_delay(uid: str, **_: Any) -> float:
    return decide.phase_offset(uid) * policy_tick()


@kopf.timer(*DRIFTPOLICIES, interval=policy_tick(), initial_delay=_initial_delay, backoff=API_RETRY_SECONDS,
            when=in_this_shard)
async def drive_policy(
    body: Any, meta: Any, status: Any, namespace: str, name: str, uid: str, memo: Any,
    policy_targets: kopf.Index, retrain_jobs: kopf.Index, retrain_cronjobs: kopf.Index, **_: Any,
) -> None:
    try:
        policy = DriftPolicy.model_validate({k: v for k, v in dict(body).items() if k != "status"})
    except ValidationError:
        return  # the spec handler records InvalidSpec and fails permanently
    current = dict(status or {})
    if memo.fence.is_stale(uid, meta.get("resourceVersion")):
        return  # our last write has not come back through the watch yet: decide on it, not on older state
    try:
        previous = DriftPolicyStatus.model_validate(current)
    except ValidationError:
        previous = DriftPolicyStatus()
    spec = policy.spec
    now = datetime.datetime.now(datetime.timezone.utc)
    target = next(iter(policy_targets.get((namespace, spec.target_ref.name), [])), None)
    ctx = _context(policy, namespace, name, uid, target, memo.config.prometheus_url)
    owner = PolicyOwner(name, namespace, uid)
    loop = asyncio.get_running_loop()
    cronjob = next(iter(retrain_cronjobs.get((namespace, name), [])), None)
    if cronjob is not None or (spec.actions.retrain is not None and spec.actions.retrain.schedule):
        await loop.run_in_executor(EVALUATIONS, _sync_cronjob, memo.kube, ctx, owner, target, cronjob)

    token = (meta.get("annotations") or {}).get(RETRAIN_ANNOTATION)
    step = await _decide(ctx, policy, previous, target, token, retrain_jobs.get((namespace, name), []), memo, now)
    if step.retrain is not None:
        step = await _launch(ctx, owner, step, memo.kube, now)

    reference = {"apiVersion": policy.api_version, "kind": policy.kind, "metadata": {"name": name, "namespace": namespace, "uid": uid}}
    changes = status_changes(current, step.status.to_wire())
    if changes:
        view = {**reference, "metadata": {**reference["metadata"], "resourceVersion": meta.get("resourceVersion")}}
        try:
            await loop.run_in_executor(EVALUATIONS, write_status, memo.kube, memo.fence, view, changes)
            metrics.record_status_write("DriftPolicy", "written")
        except StaleView:
            # Decided from an outdated view: nothing is announced; the next tick decides again from a
            # fresh one (a Job already created is found again by its deterministic name).
            metrics.record_status_write("DriftPolicy", "conflict")
            return
        except ApiException as exc:  # the API failing: the next tick decides again (same Job name)
            metrics.record_status_write("DriftPolicy", "error")
            logger.warning("%s/%s: status write failed (%s %s); deciding again next tick", namespace, name, exc.status, exc.reason)
            return
    for event in step.events:
        kopf.event(reference, type=event.type, reason=event.reason, message=event.message)
    if step.notification is not None:
        task = asyncio.create_task(_notify(memo.kube, reference, spec.actions.alert, step.notification, namespace, name))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _decide(ctx: decide.PolicyContext, policy: DriftPolicy, previous: DriftPolicyStatus, target: TargetInfo | None,
                  token: str | None, jobs: Any, memo: Any, now: datetime.datetime) -> decide.Step:
    """Follow the running Job, evaluate if due, take a manual trigger: one combined Step."""
    loop = asyncio.get_running_loop()
    namespace, name, spec = ctx.namespace, ctx.name, ctx.spec
    job = None
    previous = decide.adopt_unrecorded_job(previous, list(jobs))
    if previous.last_retrain is not None and previous.last_retrain.outcome == "Running":
        job = await loop.run_in_executor(EVALUATIONS, _observed_job, memo.kube, previous.last_retrain.job_name, jobs, namespace)
    combined = decide.follow_job(previous, job, now)
    for event in combined.events:
        metrics.record_action(namespace, name, "retrain", event.reason.removeprefix("Retrain").lower())
    step = None
    if spec.suspend:
        step = decide.suspended(ctx, combined.status, now)
    elif target is None:
        step = decide.target_missing(ctx, combined.status, now)
    elif decide.evaluation_due(ctx, combined.status, now):
        evaluation, drifts = await loop.run_in_executor(EVALUATIONS, _evaluate, memo.kube, memo.config, memo.prometheus,
                                                        policy, namespace, target, now)
        step = decide.observe(ctx, combined.status, evaluation, now)
        metrics.record_evaluation(namespace, name, evaluation, drifts, evaluation.duration_seconds or 0.0)
        if any(e.reason == "RollbackRequested" for e in step.events):
            metrics.record_action(namespace, name, "rollback", "requested")
    if step is not None:
        combined = decide.Step(step.status, combined.events + step.events, step.notification, step.retrain)
    if combined.retrain is None and not spec.suspend:
        manual = decide.manual_retrain(ctx, combined.status, token, now)
        combined = decide.Step(manual.status, combined.events + manual.events, combined.notification, manual.retrain)
    return combined


async def _launch(ctx: decide.PolicyContext, owner: PolicyOwner, step: decide.Step, kube: Any, now: datetime.datetime) -> decide.Step:
    """Create the requested Job (409 counts as created) and record it; a failure is retried by a later tick."""
    request = step.retrain
    assert request is not None and ctx.spec.actions.retrain is not None
    body = retrain_job(owner, ctx.spec.actions.retrain.job_template, request.job_name, request.trigger,
                       _retrain_context(ctx, step.status, request))
    error = await asyncio.get_running_loop().run_in_executor(EVALUATIONS, _create, kube, body)
    if error:
        metrics.record_action(ctx.namespace, ctx.name, "retrain", "error")
        failed = Event("Warning", "RetrainFailed", f"cannot create Job {request.job_name}: {error}")
        return decide.Step(step.status, [*step.events, failed], step.notification)
    metrics.record_action(ctx.namespace, ctx.name, "retrain", "launched")
    launched = decide.launched(ctx, step.status, request, now)
    return decide.Step(launched.status, step.events + launched.events, step.notification, request)


@kopf.on.delete(*DRIFTPOLICIES, optional=True, when=in_this_shard)
def forget_policy_metrics(namespace: str, name: str, **_: Any) -> None:
    metrics.forget_policy(namespace, name)


def _context(policy: DriftPolicy, namespace: str, name: str, uid: str, target: TargetInfo | None, default_url: str) -> decide.PolicyContext:
    spec = policy.spec
    created = policy.metadata.get("creationTimestamp")
    alert = AlertContext(
        policy=name, namespace=namespace, modeldeployment=spec.target_ref.name,
        model=target.model if target else spec.target_ref.name, track=spec.track.value,
        version=target.versions.get(spec.track.value) if target else None,
        prometheus_url=spec.prometheus.url if spec.prometheus else default_url,
    )
    return decide.PolicyContext(
        name=name, namespace=namespace, uid=uid, spec=spec, generation=policy.metadata.get("generation"),
        created=datetime.datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None, alert=alert,
    )


def _retrain_context(ctx: decide.PolicyContext, status: DriftPolicyStatus, request: decide.RetrainRequest) -> RetrainContext:
    last = status.last_evaluation
    end = last.time if last else None
    return RetrainContext(
        model=ctx.alert.model, namespace=ctx.namespace, track=ctx.alert.track, policy=ctx.name, reason=request.reason,
        version=ctx.alert.version or "", failing_checks=request.failing_checks,
        window_start=end - ctx.spec.window if end else None, window_end=end,
    )


def _observed_job(kube: Any, job_name: str, indexed: Any, namespace: str) -> decide.JobState | None:
    """The running retraining Job from the index; by name only when the index has not seen it (yet)."""
    found = next((job for job in indexed if job.name == job_name), None)
    if found is None:
        body = kube.get("batch/v1", "Job", namespace, job_name)
        found = job_state(body) if body else None
    return found


def _sync_cronjob(kube: Any, ctx: decide.PolicyContext, owner: PolicyOwner, target: TargetInfo | None, current: dict[str, Any] | None) -> None:
    """Apply the schedule's CronJob if it differs from the indexed one; delete it when the schedule is gone."""
    retrain = ctx.spec.actions.retrain
    if retrain is None or not retrain.schedule:
        if current is not None:
            kube.delete("batch/v1", "CronJob", ctx.namespace, current["metadata"]["name"])
        return
    if target is None:
        return  # keep what runs until the target is back
    context = RetrainContext(model=ctx.alert.model, namespace=ctx.namespace, track=ctx.alert.track, policy=ctx.name,
                             reason=f"schedule {retrain.schedule}", version=ctx.alert.version or "")
    desired = retrain_cronjob(owner, retrain.job_template, retrain.schedule, context)
    if current is not None and is_subset(desired, current):
        return
    try:
        kube.apply(desired)  # server-side apply: creates it, or takes back only the fields we set
    except Exception as exc:  # an invalid schedule is the user's to fix; keep evaluating
        logger.warning("%s/%s: cannot apply the retraining CronJob: %s", ctx.namespace, ctx.name, exc)


def _create(kube: Any, job: dict[str, Any]) -> str | None:
    """Create the Job; one that already exists (409: a retry or a restart) counts as created."""
    try:
        kube.create(job)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:500]


def _evaluate(kube: Any, config: OperatorConfig, prometheus: ProviderPool, policy: DriftPolicy, namespace: str, target: TargetInfo,
              now: datetime.datetime) -> tuple[Evaluation, list[Any]]:
    """One evaluation; anything that prevents it (a missing Secret, a bad profile) is an Error verdict."""
    spec = policy.spec
    try:
        source = _prometheus_config(kube, spec.prometheus, namespace, config.prometheus_url)
        label = spec.prometheus.namespace_label if spec.prometheus and spec.prometheus.namespace_label is not None else config.namespace_label
        profile = None
        if spec.reference is not None and spec.reference.profile_ref is not None:
            ref = spec.reference.profile_ref.config_map
            config_map = kube.get("v1", "ConfigMap", namespace, ref.name)
            data = (config_map or {}).get("data") or {}
            if ref.key not in data:
                raise LookupError(f"ConfigMap {ref.name} has no key {ref.key}")
            profile = reference_from_profile(data[ref.key], f"profile {ref.name}/{ref.key}")
        provider = prometheus.get(source)  # kept: the next evaluation reuses its connections
        timed = evaluate(spec, Target(target.model, namespace, target.versions, namespace_label=label or None),
                         FailFastProvider(provider), now, profile)
        return timed.report.evaluation, timed.report.drift
    except Exception as exc:
        unexpected = not isinstance(exc, LookupError)  # a missing Secret/ConfigMap needs no traceback
        logger.warning("%s/%s: evaluation failed: %s", namespace, policy.metadata.get("name"), exc, exc_info=unexpected)
        result = CheckResult(check="setup", verdict=Verdict.ERROR, message=f"{type(exc).__name__}: {exc}"[:500])
        return Evaluation(time=now, verdict=Verdict.ERROR, results=[result], duration_seconds=0.0), []


def _prometheus_config(kube: Any, source: Any, namespace: str, default_url: str) -> PrometheusConfig:
    if source is None:
        return PrometheusConfig(url=default_url)
    secret = _secret_reader(kube, namespace)
    token = secret(source.bearer_token_secret_ref.name, source.bearer_token_secret_ref.key) if source.bearer_token_secret_ref else None
    auth = source.basic_auth
    basic = (secret(auth.secret_name, auth.username_key), secret(auth.secret_name, auth.password_key)) if auth else None
    ca = secret(source.ca_secret_ref.name, source.ca_secret_ref.key) if source.ca_secret_ref else None
    return PrometheusConfig(url=source.url, headers=dict(source.headers), bearer_token=token.strip() if token else None,
                            basic_auth=basic, ca_pem=ca, timeout_seconds=source.timeout.total_seconds())


def _secret_reader(kube: Any, namespace: str) -> SecretReader:
    def read(name: str, key: str) -> str:
        secret = kube.get("v1", "Secret", namespace, name)
        data = (secret or {}).get("data") or {}
        if key not in data:
            raise LookupError(f"Secret {name} has no key {key}" if secret else f"Secret {name} not found")
        return base64.b64decode(data[key]).decode()

    return read


async def _notify(kube: Any, reference: dict[str, Any], alert_spec: Any, notification: Notification, namespace: str, name: str) -> None:
    """Send to every channel at once, time-boxed; outcomes become AlertSent/AlertFailed Events."""
    loop = asyncio.get_running_loop()
    secret = _secret_reader(kube, namespace)
    channels = factory.configured_channels(alert_spec)

    def send(channel: str) -> None:
        deliver(factory.build(channel, alert_spec, secret), notification)

    post = lambda kind, reason, message: kopf.event(reference, type=kind, reason=reason, message=message)  # noqa: E731
    factory.event_notifier(post).send(notification)  # first: never delayed by a slow receiver
    delivered = ["event"]
    futures = [loop.run_in_executor(NOTIFICATIONS, send, channel) for channel in channels]
    _, pending = await asyncio.wait(futures, timeout=NOTIFY_DEADLINE_SECONDS) if futures else (set(), set())
    for channel, future in zip(channels, futures):
        error = "timed out" if future in pending else future.exception()
        outcome = "failed" if error else "sent"
        metrics.record_notification(namespace, name, channel, outcome)
        if error:
            post("Warning", "AlertFailed", f"{channel}: {error}"[:1024])
        else:
            delivered.append(channel)
    metrics.record_notification(namespace, name, "event", "sent")
    what = "resolution" if notification.resolved else "alert"
    post("Normal", "AlertSent", f"{what} '{notification.subject}' delivered to {', '.join(delivered)}")
    logger.info("%s/%s: %s delivered to %s", namespace, name, what, ", ".join(delivered))
