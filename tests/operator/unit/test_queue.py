"""WorkQueue: coalesces a burst into one reconcile, never runs one key twice at once, runs a
key again when it changed during its reconcile, retries failures with growing delays, and
does nothing while paused (a standby operator)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable

from chatcluster_operator.queue import Key, WorkQueue

K: Key = ("ns", "a")


@contextlib.asynccontextmanager
async def running(queue: WorkQueue) -> AsyncIterator[None]:
    task = asyncio.create_task(queue.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_burst_is_coalesced() -> None:
    calls: list[Key] = []

    async def handler(key: Key) -> None:
        calls.append(key)

    q = WorkQueue(handler, coalesce_s=0.05)
    q.resume()
    async with running(q):
        for _ in range(20):
            q.add(K)
        await until(lambda: calls == [K] and q.pending() == 0)


async def test_one_at_a_time_and_rerun_after_change() -> None:
    active = 0
    peak = 0
    calls = 0
    release = asyncio.Event()

    async def handler(key: Key) -> None:
        nonlocal active, peak, calls
        active += 1
        peak = max(peak, active)
        calls += 1
        if calls == 1:
            await release.wait()
        active -= 1

    q = WorkQueue(handler, workers=4, coalesce_s=0.0)
    q.resume()
    async with running(q):
        q.add(K)
        await until(lambda: calls == 1)
        q.add(K)  # changed while being reconciled
        q.add(K)
        release.set()
        await until(lambda: calls == 2 and q.pending() == 0)
    assert peak == 1


async def test_failures_back_off() -> None:
    times: list[float] = []

    async def handler(key: Key) -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise RuntimeError("api down")

    q = WorkQueue(handler, coalesce_s=0.0, base_backoff=0.1)
    q.resume()
    async with running(q):
        q.add(K)
        await until(lambda: len(times) == 3)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.09
    assert gaps[1] >= 0.19  # doubled


async def test_paused_queue_does_nothing_until_resumed() -> None:
    calls: list[Key] = []

    async def handler(key: Key) -> None:
        calls.append(key)

    q = WorkQueue(handler, coalesce_s=0.0)
    async with running(q):
        q.add(K)
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert calls == []
        q.resume()
        await until(lambda: calls == [K])
