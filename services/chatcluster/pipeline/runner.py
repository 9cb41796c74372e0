"""Runs the consumer groups: poll, write, commit; on failure rewind and retry with backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from chatcluster.observability import PipelineMetrics
from chatcluster.pipeline import acks, persistence
from chatcluster.ports.bus import Bus, Record
from chatcluster.ports.fanout import Fanout
from chatcluster.ports.store import Store

log = logging.getLogger(__name__)

BATCH = 500
POLL_TIMEOUT_S = 0.2
MAX_BACKOFF_S = 5.0
# How often the lag gauge is read: cheap on both buses (a COUNT, or cached end offsets).
LAG_EVERY_S = 0.5


class Pipeline:
    def __init__(self, *, bus: Bus, store: Store, fanout: Fanout, name: str = "consumers"
                 ) -> None:
        self.bus = bus
        self.store = store
        self.fanout = fanout
        self.name = name
        self.metrics = PipelineMetrics()
        self.healthy = True

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(
            self._consume(stop, persistence.GROUP, persistence.TOPICS, self._persist),
            self._consume(stop, acks.GROUP, acks.TOPICS, self._acks))

    async def _persist(self, records: list[Record]) -> None:
        await self.store.write_pipeline_batch(await persistence.build_batch(self.store, records))

    async def _acks(self, records: list[Record]) -> None:
        await acks.process(self.store, self.fanout, records, self.name)

    async def _consume(self, stop: asyncio.Event, group: str, topics: tuple[str, ...],
                       handle: Callable[[list[Record]], Awaitable[None]]) -> None:
        consumer = self.bus.consumer(group, topics)
        backoff = 0.1
        next_lag = 0.0
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_lag:  # a steady reading, busy or idle
                        next_lag = time.monotonic() + LAG_EVERY_S
                        self.metrics.lag.labels(group).set(await consumer.lag())
                    records = await consumer.poll(BATCH, POLL_TIMEOUT_S)
                    if not records:
                        continue
                    await handle(records)
                    await consumer.commit(records)  # only after the write: at-least-once
                    self.metrics.records.labels(group).inc(len(records))
                    self.metrics.batches.labels(group).inc()
                    backoff = 0.1
                    self.healthy = True
                except Exception:
                    self.healthy = False
                    self.metrics.failures.labels(group).inc()
                    log.exception("batch failed; retrying", extra={"fields": {
                        "group": group, "backoff_s": backoff}})
                    await consumer.rewind()
                    await asyncio.sleep(backoff)
                    backoff = min(MAX_BACKOFF_S, backoff * 2)
        finally:
            await consumer.close()
