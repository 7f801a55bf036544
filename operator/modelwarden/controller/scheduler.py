"""One scheduler for every DriftPolicy: a due-time heap and a bounded pool of workers.

Why not a kopf timer per policy: 1000 policies ticking every second cost the operator most of a
core doing nothing (each tick is a task, a handler call and a log line). Here a policy runs when
something it depends on changed (its object, its target ModelDeployment, its retraining Job or
CronJob: the watch handlers call `wake`) or when its next evaluation is due (the time its tick
returned), and at the latest after the fallback interval (level-triggered: a missed event costs
at most that long). A policy is never ticked twice at once; at most `workers` tick together, so
a slow Prometheus or too many policies make evaluations late, which each policy reports
(EvaluationLagging), instead of piling up threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable

from modelwarden.kube.api import describe_error

logger = logging.getLogger(__name__)

Tick = Callable[[Hashable], Awaitable[float | None]]  # runs one policy; returns seconds until it is due again


class PolicyScheduler:
    """Runs `tick(key)` for each known key when it is due; `wake(key)` makes it due now."""

    def __init__(self, tick: Tick, workers: int = 8, fallback: float = 30.0, retry: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tick, self.fallback, self.retry, self._clock = tick, fallback, retry, clock
        self._workers = asyncio.Semaphore(workers)
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}  # the earliest time each key is due (heap entries may be stale)
        self._running: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # woken while running: due again at this time once done
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.context: contextvars.Context | None = None  # ticks run in a copy of it (kopf's, for posting Events)

    def wake(self, key: Hashable, delay: float = 0.0) -> None:
        """Due in `delay` seconds, unless already due sooner."""
        at = self._clock() + max(0.0, delay)
        if key in self._running:
            self._again[key] = min(at, self._again.get(key, at))
            return
        if at < self._due.get(key, float("inf")):
            self._due[key] = at
            heapq.heappush(self._heap, (at, next(self._order), key))
            self._changed.set()

    def forget(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._again.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._due or key in self._running

    async def run(self) -> None:
        """The loop: start each due key's tick when a worker is free; until cancelled."""
        try:
            while True:
                await self._workers.acquire()
                key = await self._next_due()
                self._running.add(key)
                task = asyncio.create_task(self._run_one(key), context=self.context.copy() if self.context else None)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _next_due(self) -> Hashable:
        while True:
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # stale: forgotten, or rescheduled sooner
            wait = self._heap[0][0] - self._clock() if self._heap else None
            if wait is not None and wait <= 0:
                _, _, key = heapq.heappop(self._heap)
                del self._due[key]
                return key
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    async def _run_one(self, key: Hashable) -> None:
        delay: float | None = self.retry
        try:
            delay = await self._tick(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the API failing: this policy again soon, the others unaffected
            logger.warning("%s: tick failed (%s); again in %.1fs", "/".join(map(str, key)) if isinstance(key, tuple) else key,
                           describe_error(exc), self.retry)
        finally:
            self._running.discard(key)
            self._workers.release()
        again = self._again.pop(key, None)
        if delay is None:  # the policy is gone (deleted, not ours, or invalid): only a watch event brings it back
            if again is not None:
                self.wake(key, again - self._clock())
            return
        # A little jitter keeps policies created together from staying in lockstep.
        self.wake(key, min(max(0.0, delay), self.fallback) * random.uniform(1.0, 1.02))
        if again is not None:
            self.wake(key, again - self._clock())
