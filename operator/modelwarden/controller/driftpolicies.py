"""DriftPolicy ticks. One scheduler runs every policy (controller/scheduler.py, fed by the watches
in controller/policyloop.py); a tick gathers what the pure `planning.tick.needs()` names (the
running Job, an evaluation when one is due), decides once (`planning.tick.decide_tick`), executes
(retraining Job, CronJob, notifications), writes status once (only when it changed) and returns
when the policy is due again.

Scheduling: a policy is never ticked twice at once, so a slow evaluation delays the next one
instead of running beside it. Whether an evaluation is due comes from status (lastEvaluation.time
+ spec.interval), so the cadence survives restarts and a restarted operator does not evaluate
every policy at once; a new policy's first evaluation waits a uid-derived share of
min(interval, 30 s), so 1000 policies applied together do not evaluate together.

Blocking work (Prometheus queries, Kubernetes calls, notifications) runs in bounded thread pools
of its own, so slow backends never starve the ModelDeployment reconciler's threads, and
notifications are sent in the background: a slow receiver never delays a verdict (the rollback
reads the verdict from status).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelwarden.analysis.reference import reference_from_profile
from modelwarden.api.duration import parse_timestamp
from modelwarden.api.actions import AlertSpec
from modelwarden.planning.budget import evaluation_level
from modelwarden.api.driftpolicy import CheckResult, DriftPolicy, DriftPolicyStatus, Evaluation, PrometheusSource, Verdict
from modelwarden.controller import policyloop, telemetry, tracking
from modelwarden.controller.config import OperatorConfig
from modelwarden.controller.memo import Memo
from modelwarden.controller.resolution import mlflow_registry
from modelwarden.controller.runledger import LEDGER
from modelwarden.controller.status import status_changes
from modelwarden.contract.kubernetes import (
    DRIFTPOLICIES,
    EVALUATE_ANNOTATION,
    MANAGED_BY,
    MODELDEPLOYMENTS,
    POLICY_LABEL,
    RETRAIN_ANNOTATION,
)
from modelwarden.kube.api import KubeApi, StaleView, describe_error
from modelwarden.kube.apply import is_subset
from modelwarden.kube.fence import write_status
from modelwarden.kube.secrets import opted_in_secret_reader
from modelwarden.prometheus.collect import Target, evaluate
from modelwarden.prometheus.failfast import FailFastProvider
from modelwarden.prometheus.client import PrometheusConfig, ProviderPool
from modelwarden.notifiers import factory
from modelwarden.notifiers.base import deliver
from modelwarden.planning import tick
from modelwarden.planning.notification import AlertContext, Notification
from modelwarden.planning.egress import EgressRules
from modelwarden.planning.policy import PolicyContext, evaluation_budget
from modelwarden.planning.retraining import JobOutcome, JobResult, JobState, RetrainRun, RetrainTarget, job_state
from modelwarden.retrainers import factory as retrainers
from modelwarden.retrainers.base import ResultSource, Retrainer
from modelwarden.planning.tracking import tracking_record

NOTIFY_DEADLINE_SECONDS = 30.0
API_RETRY_SECONDS = 1.0  # a failed tick (e.g. the API answering 500) is retried this soon, not after kopf's minute
# A pool per purpose: slow evaluations (a slow Prometheus) never delay Job creation, status
# writes or notifications.
EVALUATIONS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="policy-eval")
KUBE_CALLS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="policy-kube")
# Retraining backends (Airflow, Kubeflow: up to 60s a request) never hold up status writes.
RETRAIN_CALLS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="policy-retrain")
NOTIFICATIONS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="policy-notify")
_background: set[asyncio.Task[None]] = set()  # keeps notification tasks referenced until done
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetInfo:
    model: str
    versions: dict[str, str] = field(default_factory=dict)  # track -> version served (from status)
    canary_started_at: str | None = None  # status.canaryStartedAt: when the current canary split began
    stable_model_uri: str = ""  # what the stable pods fetch (status.stable.resolvedUri)


def policy_targets(namespace: str, name: str, spec: Any, status: Any, **_: Any) -> dict[Any, Any] | None:
    if not spec.get("model"):
        return None
    status = dict(status or {})
    versions = {track: status[track]["version"] for track in ("stable", "canary", "shadow")
                if isinstance(status.get(track), dict) and status[track].get("version")}
    stable = status.get("stable") if isinstance(status.get("stable"), dict) else {}
    uri = str(stable.get("resolvedUri") or stable.get("modelUri") or "")
    return {(namespace, name): TargetInfo(spec["model"], versions, status.get("canaryStartedAt"), uri)}


def retrain_jobs(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[POLICY_LABEL]): job_state(dict(body))}


def retrain_cronjobs(namespace: str, labels: dict[str, str], body: Any, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[POLICY_LABEL]): dict(body)}


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """The DriftPolicy loop's handlers: one scheduler for all policies (controller/scheduler.py),
    the watches that wake it, and the indexes its ticks read."""
    kopf.index(*MODELDEPLOYMENTS, registry=registry)(policy_targets)
    owned_by_policy = {**MANAGED_BY, POLICY_LABEL: kopf.PRESENT}
    kopf.index("batch", "v1", "jobs", labels=owned_by_policy, registry=registry)(retrain_jobs)
    kopf.index("batch", "v1", "cronjobs", labels=owned_by_policy, registry=registry)(retrain_cronjobs)
    kopf.on.startup(id="start_policy_scheduler", registry=registry)(functools.partial(policyloop.start, tick=tick_policy, config=config))
    kopf.on.cleanup(id="stop_policy_scheduler", registry=registry)(policyloop.stop)
    kopf.on.event(*DRIFTPOLICIES, registry=registry)(policyloop.watch_policy)
    kopf.on.event(*MODELDEPLOYMENTS, registry=registry)(policyloop.wake_judges)
    kopf.on.event("batch", "v1", "jobs", labels=owned_by_policy, registry=registry)(policyloop.wake_owner)
    kopf.on.event("batch", "v1", "cronjobs", labels=owned_by_policy, id="wake_owner_of_cronjob", registry=registry)(
        policyloop.wake_owner)


async def tick_policy(memo: Memo, key: tuple[str, str]) -> float | None:
    """One tick: gather what `needs()` names, decide once (`decide_tick`), execute, persist once.
    Returns the seconds until the policy is due again (None: it is gone or invalid)."""
    policies = memo.policy_loop
    body = policies.bodies.get(key)
    if body is None:
        return None
    meta, namespace, name = body.get("metadata", {}), key[0], key[1]
    uid = meta.get("uid", "")
    try:
        policy = DriftPolicy.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError:
        return None  # the spec handler records InvalidSpec; a new spec is a new event
    if policy.spec.scrape_problems(memo.config.scrape_interval):
        return None  # the same: windows too short for the scrape interval
    current = dict(body.get("status") or {})
    if memo.fence.is_stale(uid, meta.get("resourceVersion")):
        return memo.config.policy_tick  # our last write is on its way through the watch: its event wakes us
    policy_targets, retrain_jobs, retrain_cronjobs = (policies.indexes[n] for n in ("policy_targets", "retrain_jobs", "retrain_cronjobs"))
    try:
        previous = DriftPolicyStatus.model_validate(current)
    except ValidationError:
        previous = DriftPolicyStatus()
    spec = policy.spec
    now = datetime.datetime.now(datetime.timezone.utc)
    loop = asyncio.get_running_loop()
    target = next(iter(policy_targets.get((namespace, spec.target_ref.name), [])), None)
    ctx = _context(policy, namespace, name, uid, target, memo.config)
    retrain = spec.actions.retrain
    # Jobs found by the watch are this policy's runs only while it retrains with Jobs.
    jobs = tuple(retrain_jobs.get((namespace, name), [])) if retrain is None or retrain.job_template is not None else ()
    results = ResultSource(memo.config.mlflow_tracking_uri, memo.config.mlflow_tracking_token, mlflow_registry)
    retrainer = retrainers.build(retrain, memo.kube, namespace, opted_in_secret_reader(memo.kube, namespace), memo.config.egress,
                                 results, jobs)
    indexed_cronjob = next(iter(retrain_cronjobs.get((namespace, name), [])), None)

    # Gather.
    external = retrain is not None and retrain.job_template is None
    unlisted = None  # why this tick may not launch: the policy's runs could not be listed (controller/runledger.py)
    if external and LEDGER.must_list(uid):
        unlisted = f"its {retrainer.noun}s are not listed yet (a failed listing is asked again after pollInterval)"
        if LEDGER.may_list_now(uid):
            try:
                jobs = await loop.run_in_executor(RETRAIN_CALLS, retrainer.runs, name)
                LEDGER.listed(uid)
                unlisted = None
            except Exception as exc:  # evaluations go on; nothing is launched until a listing succeeds
                LEDGER.listing_failed(uid, retrainer.poll_seconds or memo.config.policy_tick)
                unlisted = f"cannot list its {retrainer.noun}s to be sure none runs already: {describe_error(exc)}"
                logger.warning("%s/%s: %s", namespace, name, unlisted)
    annotations = meta.get("annotations") or {}
    need = tick.needs(ctx, previous, jobs, target is not None, now, annotations.get(EVALUATE_ANNOTATION))
    job = None
    if need.job is not None:
        now_backend, last = retrain.backend if retrain is not None else "Job", previous.last_retrain
        recorded = (last.backend or "Job") if last is not None and last.job_name == need.job else now_backend  # else: just adopted
        if recorded != now_backend:  # the spec changed backend while it ran: never mistake it for gone
            job = JobState(need.job, JobOutcome.FAILED, now, f"no longer followed: spec.actions.retrain now names {now_backend}, "
                                                               f"not {recorded} (look at it there)")
        else:
            job = await loop.run_in_executor(RETRAIN_CALLS, _observed_run, retrainer, need.job, namespace, name)
    evaluation = None
    if need.evaluation is not None:
        assert target is not None
        level = evaluation_level(spec, previous, ctx.alert.version)  # this look's share of spec.alpha
        evaluation, drifts = await loop.run_in_executor(EVALUATIONS, _run_evaluation, memo.kube, memo.config, memo.prometheus,
                                                        policy, namespace, target, need.evaluation, level)
        telemetry.record_evaluation(namespace, name, evaluation, drifts, evaluation.duration_seconds or 0.0)
    seen = tick.Observations(
        target_found=target is not None, cronjob=indexed_cronjob["metadata"]["name"] if indexed_cronjob else None,
        jobs=jobs, job=job, evaluation=evaluation, retrain_token=annotations.get(RETRAIN_ANNOTATION),
        evaluate_token=annotations.get(EVALUATE_ANNOTATION),
    )

    # Decide.
    decision = tick.decide_tick(ctx, previous, seen, now)

    # Execute: Jobs and the CronJob first (a Job's deterministic name makes a repeat a no-op).
    if decision.finished is not None:
        telemetry.record_action(namespace, name, "retrain", decision.finished.value.lower())
    if decision.rollback_requested:
        telemetry.record_action(namespace, name, "rollback", "requested")
    if decision.cronjob is not None or decision.delete_cronjob is not None:
        await loop.run_in_executor(KUBE_CALLS, _sync_cronjob, memo.kube, namespace, decision, indexed_cronjob)
    launch_error = None
    if decision.run is not None:
        launch_error = unlisted or await loop.run_in_executor(RETRAIN_CALLS, _launch, retrainer, decision.run)
        telemetry.record_action(namespace, name, "retrain", "error" if launch_error else "launched")
        if launch_error:
            decision = decision.launch_failed(launch_error)
    if external and (decision.run is not None or launch_error or jobs):
        LEDGER.unrecorded(uid)  # until status holds it (a timed-out launch may have launched after all: listed again)

    # Persist once, conditional on the resourceVersion decided from; announce only what was persisted.
    reference = {"apiVersion": policy.api_version, "kind": policy.kind, "metadata": {"name": name, "namespace": namespace, "uid": uid}}
    changes = status_changes(current, decision.status.to_wire())
    if changes:
        view = {**reference, "metadata": {**reference["metadata"], "resourceVersion": meta.get("resourceVersion")}}
        try:
            await loop.run_in_executor(KUBE_CALLS, write_status, memo.kube, memo.fence, view, changes)
            telemetry.record_status_write("DriftPolicy", "written")
        except StaleView:
            # Decided from an outdated view: nothing is announced; the next tick decides again from a
            # fresh one (a run already launched is found again: by its name, or listed and adopted).
            telemetry.record_status_write("DriftPolicy", "conflict")
            return API_RETRY_SECONDS
        except ApiException as exc:  # the API failing: the next tick decides again (same Job name)
            telemetry.record_status_write("DriftPolicy", "error")
            logger.warning("%s/%s: status write failed (%s %s); deciding again next tick", namespace, name, exc.status, exc.reason)
            return API_RETRY_SECONDS
    if not launch_error:
        LEDGER.recorded(uid)
    for event in decision.events:
        kopf.event(reference, type=event.type, reason=event.reason, message=event.message)
    persisted = decision.status.last_evaluation
    if evaluation is not None and persisted is not None and persisted.time == evaluation.time:  # what status now holds
        tracked = tracking_record(namespace, name, ctx.generation, spec, persisted, ctx.alert.model, ctx.alert.version)
        if tracked is not None:
            tracking.record(memo.config, reference, tracked)
    if decision.notification is not None:
        task = asyncio.create_task(_notify(memo.kube, memo.config.egress, reference, spec.actions.alert, decision.notification, namespace, name))
        _background.add(task)
        task.add_done_callback(_background.discard)
    due = memo.config.policy_tick if decision.next_at is None else (  # None: suspended or without a target
        decision.next_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    running = decision.status.last_retrain is not None and decision.status.last_retrain.outcome == JobOutcome.RUNNING
    if running and retrainer.poll_seconds is not None:  # no watch tells when it finishes: ask again
        return min(due, retrainer.poll_seconds)
    return due


def _context(policy: DriftPolicy, namespace: str, name: str, uid: str, target: TargetInfo | None, config: OperatorConfig) -> PolicyContext:
    spec, default_url = policy.spec, config.prometheus_url
    created = policy.metadata.get("creationTimestamp")
    alert = AlertContext(
        policy=name, namespace=namespace, modeldeployment=spec.target_ref.name,
        model=target.model if target else spec.target_ref.name, track=spec.track.value,
        version=target.versions.get(spec.track.value) if target else None,
        prometheus_url=spec.prometheus.url if spec.prometheus else default_url,
    )
    return PolicyContext(
        name=name, namespace=namespace, uid=uid, spec=spec, generation=policy.metadata.get("generation"),
        created=parse_timestamp(created), alert=alert,
        rollout_started=parse_timestamp(target.canary_started_at) if target and spec.track.value == "canary" else None,
        retrain_target=RetrainTarget(stable_version=target.versions.get("stable", "") if target else "",
                                     stable_model_uri=target.stable_model_uri if target else "",
                                     mlflow_tracking_uri=config.mlflow_tracking_uri or ""),
    )


def _observed_run(retrainer: Retrainer, run_name: str, namespace: str, policy: str) -> JobState | None:
    """The running retraining run as its backend reports it, with its result once it succeeded. A
    backend that cannot say now leaves it running (asked again next tick): never a made-up outcome."""
    try:
        found = retrainer.observe(run_name)
    except Exception as exc:  # unreachable, refused, an answer that is not what the API promises
        logger.warning("%s/%s: cannot follow %s %s: %s", namespace, policy, retrainer.noun, run_name, describe_error(exc))
        return JobState(run_name, JobOutcome.RUNNING, message=f"its backend cannot say now: {describe_error(exc)}")
    if found is None or found.outcome is not JobOutcome.SUCCEEDED:
        return found
    try:  # what it produced: a candidate, or why not
        result = retrainer.result(run_name)
    except Exception as exc:
        result = JobResult(unavailable=describe_error(exc))
    return dataclasses.replace(found, result=result)


def _sync_cronjob(kube: KubeApi, namespace: str, decision: tick.Tick, current: dict[str, Any] | None) -> None:
    """Apply the decided CronJob if it differs from the indexed one, or delete the one no longer wanted."""
    if decision.delete_cronjob is not None:
        kube.delete("batch/v1", "CronJob", namespace, decision.delete_cronjob)
        return
    desired = decision.cronjob
    if desired is None or (current is not None and is_subset(desired, current)):
        return
    try:
        kube.apply(desired)  # server-side apply: creates it, or takes back only the fields we set
    except Exception as exc:  # an invalid schedule is the user's to fix; keep evaluating
        logger.warning("%s/%s: cannot apply the retraining CronJob: %s", namespace, desired["metadata"]["name"], describe_error(exc))


def _launch(retrainer: Retrainer, run: RetrainRun) -> str | None:
    """Launch the run; one that exists already (a retry or a restart) counts as launched."""
    try:
        retrainer.launch(run)
        return None
    except Exception as exc:
        return describe_error(exc)


def _run_evaluation(kube: KubeApi, config: OperatorConfig, prometheus: ProviderPool, policy: DriftPolicy, namespace: str, target: TargetInfo,
              now: datetime.datetime, level: float) -> tuple[Evaluation, list[Any]]:
    """One evaluation; anything that prevents it (a missing Secret, a bad profile) is an Error verdict."""
    spec = policy.spec
    try:
        if spec.prometheus is not None and (refusal := config.egress.prometheus_refusal(spec.prometheus.url, config.prometheus_url)):
            raise LookupError(refusal)  # before any Secret of the policy is read
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
        budget = FailFastProvider(provider, budget_seconds=evaluation_budget(spec).total_seconds())
        judged = Target(target.model, namespace, target.versions, namespace_label=label or None,
                        restrict_custom_queries=config.restrict_custom_queries)
        timed = evaluate(spec, judged, budget, now, profile, level)
        return timed.report.evaluation, timed.report.drift
    except Exception as exc:
        unexpected = not isinstance(exc, LookupError)  # a missing Secret/ConfigMap needs no traceback
        logger.warning("%s/%s: evaluation failed: %s", namespace, policy.metadata.get("name"), exc, exc_info=unexpected)
        result = CheckResult(check="setup", verdict=Verdict.ERROR, message=describe_error(exc))
        return Evaluation(time=now, verdict=Verdict.ERROR, results=[result], duration_seconds=0.0), []


def _prometheus_config(kube: KubeApi, source: PrometheusSource | None, namespace: str, default_url: str) -> PrometheusConfig:
    if source is None:
        return PrometheusConfig(url=default_url)
    secret = opted_in_secret_reader(kube, namespace)
    token = secret(source.bearer_token_secret_ref.name, source.bearer_token_secret_ref.key) if source.bearer_token_secret_ref else None
    auth = source.basic_auth
    basic = (secret(auth.secret_name, auth.username_key), secret(auth.secret_name, auth.password_key)) if auth else None
    ca = secret(source.ca_secret_ref.name, source.ca_secret_ref.key) if source.ca_secret_ref else None
    return PrometheusConfig(url=source.url, headers=dict(source.headers), bearer_token=token.strip() if token else None,
                            basic_auth=basic, ca_pem=ca, timeout_seconds=source.timeout.total_seconds())


async def _notify(kube: KubeApi, egress: EgressRules, reference: dict[str, Any], alert_spec: AlertSpec | None, notification: Notification,
                  namespace: str, name: str) -> None:
    """Send to every channel at once, time-boxed; outcomes become AlertSent/AlertFailed Events."""
    loop = asyncio.get_running_loop()
    secret = opted_in_secret_reader(kube, namespace)
    channels = factory.configured_channels(alert_spec)

    def send(channel: str) -> None:
        deliver(factory.build(channel, alert_spec, secret, egress.alert_refusal), notification)

    post = lambda kind, reason, message: kopf.event(reference, type=kind, reason=reason, message=message)  # noqa: E731
    factory.event_notifier(post).send(notification)  # first: never delayed by a slow receiver
    delivered = ["event"]
    futures = [loop.run_in_executor(NOTIFICATIONS, send, channel) for channel in channels]
    _, pending = await asyncio.wait(futures, timeout=NOTIFY_DEADLINE_SECONDS) if futures else (set(), set())
    for channel, future in zip(channels, futures):
        error = "timed out" if future in pending else future.exception()
        outcome = "failed" if error else "sent"
        telemetry.record_notification(namespace, name, channel, outcome)
        if error:
            post("Warning", "AlertFailed", f"{channel}: {error}"[:1024])
        else:
            delivered.append(channel)
    telemetry.record_notification(namespace, name, "event", "sent")
    what = "resolution" if notification.resolved else "alert"
    post("Normal", "AlertSent", f"{what} '{notification.subject}' delivered to {', '.join(delivered)}")
    logger.info("%s/%s: %s delivered to %s", namespace, name, what, ", ".join(delivered))
