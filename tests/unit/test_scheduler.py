"""controller.scheduler: one loop for every DriftPolicy; order and counts, never durations."""

from __future__ import annotations

import asyncio

from modelwarden.controller.scheduler import PolicyScheduler


async def run_until(scheduler: PolicyScheduler, done, limit: int = 2000) -> None:
    loop = asyncio.create_task(scheduler.run())
    try:
        for _ in range(limit):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the scheduler did not get there")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_woken_key_ticks_and_comes_back_when_its_tick_says():
    calls: list[str] = []

    async def tick(key):
        calls.append(key)
        return 0.0 if len(calls) < 3 else None  # due again at once, twice; then gone

    scheduler = PolicyScheduler(tick, workers=2, fallback=60)
    scheduler.wake("a")
    await run_until(scheduler, lambda: len(calls) == 3)
    await asyncio.sleep(0.05)
    assert calls == ["a", "a", "a"] and "a" not in scheduler  # None: only a watch event brings it back


async def test_never_two_ticks_of_one_key_and_at_most_workers_at_once():
    running: set[str] = set()
    most = 0
    done: list[str] = []

    async def tick(key):
        nonlocal most
        assert key not in running  # one key never runs beside itself
        running.add(key)
        most = max(most, len(running))
        await asyncio.sleep(0.02)
        running.discard(key)
        done.append(key)
        return None

    scheduler = PolicyScheduler(tick, workers=3, fallback=60)
    for i in range(12):
        scheduler.wake(f"p{i}")
    await run_until(scheduler, lambda: len(done) == 12)
    assert most == 3 and sorted(done) == sorted(f"p{i}" for i in range(12))


async def test_a_wake_while_running_ticks_once_more_afterwards():
    calls: list[int] = []
    release = asyncio.Event()

    async def tick(key):
        calls.append(len(calls))
        if len(calls) == 1:
            await release.wait()
        return None

    scheduler = PolicyScheduler(tick, workers=1, fallback=60)
    scheduler.wake("a")
    loop = asyncio.create_task(scheduler.run())
    while not calls:
        await asyncio.sleep(0.01)
    scheduler.wake("a")  # an event arrives during the tick
    scheduler.wake("a")  # and another: still one more tick, not two
    release.set()
    for _ in range(200):
        if len(calls) == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert calls == [0, 1]


async def test_a_failing_tick_is_retried_and_a_forgotten_key_is_not():
    calls: list[str] = []

    async def tick(key):
        calls.append(key)
        if key == "bad" and calls.count("bad") == 1:
            raise RuntimeError("the API answered 500")
        return None

    scheduler = PolicyScheduler(tick, workers=2, fallback=60, retry=0.01)
    scheduler.wake("bad")
    scheduler.wake("gone", delay=0.05)
    scheduler.forget("gone")
    await run_until(scheduler, lambda: calls.count("bad") == 2)
    await asyncio.sleep(0.1)
    assert calls == ["bad", "bad"]


async def test_the_earliest_wake_wins_and_the_fallback_caps_the_wait():
    calls: list[str] = []

    async def tick(key):
        calls.append(key)
        return 3600.0  # due in an hour, but the fallback is shorter

    scheduler = PolicyScheduler(tick, workers=1, fallback=0.05)
    scheduler.wake("late", delay=3600)
    scheduler.wake("late", delay=0)  # sooner wins
    await run_until(scheduler, lambda: len(calls) >= 3)
    assert set(calls) == {"late"}
