"""WorkQueue: keys in, one reconcile per key at a time, coalesced, failures retried later.

Events arrive in bursts (a scale touches the StatefulSet, its pods' EndpointSlices and the
ChatCluster within milliseconds): a key added while it waits is not added twice, and a key
added while it is being reconciled is reconciled once more afterwards, so the last event is
never lost. A failed key comes back after 1 s, 2 s, 4 s ... (at most ``max_backoff``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    def __init__(self, handler: Callable[[Key], Awaitable[None]], *, workers: int = 8,
                 coalesce_s: float = 0.05, base_backoff: float = 1.0,
                 max_backoff: float = 60.0) -> None:
        self._handler = handler
        self._workers = workers
        self._coalesce_s = coalesce_s
        self._base = base_backoff
        self._max = max_backoff
        self._due: dict[Key, float] = {}
        self._busy: set[Key] = set()
        self._again: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._wake = asyncio.Event()
        self._enabled = asyncio.Event()

    def add(self, key: Key, delay: float | None = None) -> None:
        if key in self._busy:
            self._again.add(key)
            return
        due = time.monotonic() + (self._coalesce_s if delay is None else delay)
        self._due[key] = min(due, self._due.get(key, due))
        self._wake.set()

    def forget(self, key: Key) -> None:
        self._due.pop(key, None)
        self._failures.pop(key, None)

    def pause(self) -> None:
        self._enabled.clear()

    def resume(self) -> None:
        self._enabled.set()
        self._wake.set()

    def pending(self) -> int:
        return len(self._due) + len(self._busy)

    def _next(self) -> Key | None:
        now = time.monotonic()
        ready = [k for k, t in self._due.items() if t <= now]
        if not ready:
            return None
        key = min(ready, key=self._due.__getitem__)
        del self._due[key]
        return key

    async def _worker(self) -> None:
        while True:
            await self._enabled.wait()
            key = self._next()
            if key is None:
                self._wake.clear()
                wait = min((t for t in self._due.values()), default=None)
                timeout = None if wait is None else max(0.0, wait - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            self._busy.add(key)
            try:
                await self._handler(key)
            except Exception as exc:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(self._max, self._base * 2 ** (failures - 1))
                log.warning("reconcile failed; retrying in %.0f s: %s/%s: %s", delay, *key, exc)
                self._busy.discard(key)
                self._again.discard(key)
                self.add(key, delay)
                continue
            self._failures.pop(key, None)
            self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                self.add(key)

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self._workers)))
