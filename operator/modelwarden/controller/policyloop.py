"""What the DriftPolicy scheduler knows, fed by watches: each policy's latest body, which policies
judge which ModelDeployment, and the kopf indexes a tick reads. Watch events wake the policies
they concern; `controller/driftpolicies.py` decides what a tick does."""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from modelwarden.contract.kubernetes import POLICY_LABEL
from modelwarden.controller import telemetry
from modelwarden.controller.config import OperatorConfig
from modelwarden.controller.runledger import LEDGER
from modelwarden.controller.scheduler import PolicyScheduler

Key = tuple[str, str]  # (namespace, name)


@dataclass
class PolicyLoop:
    config: OperatorConfig
    scheduler: PolicyScheduler
    bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    judging: dict[Key, set[Key]] = field(default_factory=lambda: defaultdict(set))  # target ModelDeployment -> policies
    indexes: dict[str, kopf.Index] = field(default_factory=dict)  # the kopf indexes a tick reads, by name
    task: asyncio.Task[None] | None = None

    def remember(self, key: Key, body: dict[str, Any]) -> None:
        self.forget(key)
        self.bodies[key] = body
        target = (body.get("spec") or {}).get("targetRef", {}).get("name")
        if target:
            self.judging[(key[0], target)].add(key)

    def forget(self, key: Key) -> None:
        old = self.bodies.pop(key, None)
        target = ((old or {}).get("spec") or {}).get("targetRef", {}).get("name")
        if target:
            self.judging[(key[0], target)].discard(key)


async def start(memo: Any, tick: Callable[[Any, Key], Awaitable[float | None]], config: OperatorConfig, **_: Any) -> None:
    """At startup: the scheduler's loop, as a task on kopf's event loop."""
    scheduler = PolicyScheduler(lambda key: tick(memo, key), workers=config.policy_workers, fallback=config.policy_tick)
    memo.policy_loop = PolicyLoop(config=config, scheduler=scheduler)
    memo.policy_loop.task = asyncio.create_task(scheduler.run(), name="driftpolicy-scheduler")


async def stop(memo: Any, **_: Any) -> None:
    loop: PolicyLoop | None = getattr(memo, "policy_loop", None)
    if loop is not None and loop.task is not None:
        loop.task.cancel()
        await asyncio.gather(loop.task, return_exceptions=True)


async def watch_policy(type: str | None, body: Any, namespace: str, name: str, uid: str, labels: Any, memo: Any,
                       policy_targets: kopf.Index, retrain_jobs: kopf.Index, retrain_cronjobs: kopf.Index, **_: Any) -> None:
    """Every DriftPolicy event: remember the body and tick the policy now (deleted: forget it)."""
    loop: PolicyLoop = memo.policy_loop
    if not loop.indexes:
        loop.indexes.update(policy_targets=policy_targets, retrain_jobs=retrain_jobs, retrain_cronjobs=retrain_cronjobs)
        # kopf.event() posts through context variables kopf sets for its handlers: ticks run in them too.
        loop.scheduler.context = contextvars.copy_context()
    key = (namespace, name)
    if type == "DELETED" or not loop.config.owns(uid, labels):
        LEDGER.forget(uid)
        loop.forget(key)
        loop.scheduler.forget(key)
        if type == "DELETED":
            telemetry.forget_policy(namespace, name)  # no finalizer needed: the watch says it is gone
        return
    loop.remember(key, copy.deepcopy(dict(body)))
    loop.scheduler.wake(key)


async def wake_judges(namespace: str, name: str, memo: Any, **_: Any) -> None:
    """A ModelDeployment changed (a served version, or it appeared or went): its policies tick now."""
    loop: PolicyLoop = memo.policy_loop
    for key in list(loop.judging.get((namespace, name), ())):
        loop.scheduler.wake(key)


async def wake_owner(namespace: str, labels: dict[str, str], memo: Any, **_: Any) -> None:
    """A retraining Job or CronJob changed (a Job finished, a CronJob was deleted): its policy ticks now."""
    key = (namespace, labels.get(POLICY_LABEL, ""))
    loop: PolicyLoop = memo.policy_loop
    if key in loop.bodies:
        loop.scheduler.wake(key)
