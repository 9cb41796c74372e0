"""Runs the consumer groups: poll, write, commit; on failure rewind and retry with backoff."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from chatcluster.observability import PipelineMetrics
from chatcluster.pipeline import acks, persistence, usage, webhooks
from chatcluster.pipeline.outbound import HttpSender, RetryPolicy
from chatcluster.ports.bus import Bus, Record
from chatcluster.ports.fanout import Fanout
from chatcluster.ports.registry import Registry
from chatcluster.ports.store import Store
from chatcluster.ports.usage import UsageStore
from chatcluster.ports.webhooks import WebhookStore

log = logging.getLogger(__name__)

BATCH = 500
POLL_TIMEOUT_S = 0.2
MAX_BACKOFF_S = 5.0
# How often the lag gauge is read: cheap on both buses (a COUNT, or cached end offsets).
LAG_EVERY_S = 0.5


class Pipeline:
    def __init__(self, *, bus: Bus, store: Store, fanout: Fanout, name: str = "consumers",
                 webhook_store: WebhookStore | None = None, usage_store: UsageStore | None = None,
                 registry: Registry | None = None) -> None:
        self.bus = bus
        self.store = store
        self.fanout = fanout
        self.name = name
        self.metrics = PipelineMetrics()
        self.healthy = True
        # Groups "webhooks" and "usage" (and their dispatcher and sampler) run when their
        # stores are given.
        self.webhook_store = webhook_store
        self.usage_store = usage_store
        self.registry = registry
        self.webhook_metrics = webhooks.WebhookMetrics(self.metrics.registry)
        self.usage_metrics = usage.UsageMetrics(self.metrics.registry)

    async def run(self, stop: asyncio.Event) -> None:
        groups = [self._consume(stop, persistence.GROUP, persistence.TOPICS, self._persist),
                  self._consume(stop, acks.GROUP, acks.TOPICS, self._acks)]
        sender: HttpSender | None = None
        if self.webhook_store is not None:
            policy = RetryPolicy.from_env()
            sender = HttpSender.from_env(policy.timeout_s)
            dispatcher = webhooks.Dispatcher(
                store=self.webhook_store, usage=self.usage_store, policy=policy, sender=sender,
                metrics=self.webhook_metrics,
                poll_s=float(os.environ.get("CHAT_WEBHOOKS_POLL_S") or webhooks.POLL_S),
                retention_days=float(os.environ.get("CHAT_WEBHOOKS_RETENTION_DAYS")
                                     or webhooks.RETENTION_DAYS))
            groups += [self._consume(stop, webhooks.GROUP, webhooks.TOPICS, self._webhooks),
                       dispatcher.run(stop)]
        if self.usage_store is not None:
            groups.append(self._consume(stop, usage.GROUP, usage.TOPICS, self._usage))
            if self.registry is not None:
                groups.append(usage.run_sampler(
                    self.usage_store, self.registry, stop,
                    float(os.environ.get("CHAT_USAGE_SAMPLE_S") or usage.SAMPLE_S),
                    self.usage_metrics))
        try:
            await asyncio.gather(*groups)
        finally:
            if sender is not None:
                await sender.close()

    async def _webhooks(self, records: list[Record]) -> None:
        assert self.webhook_store is not None
        self.webhook_metrics.enqueued.inc(await webhooks.enqueue_batch(self.webhook_store,
                                                                        records))

    async def _usage(self, records: list[Record]) -> None:
        assert self.usage_store is not None
        await usage.process(self.usage_store, records, self.usage_metrics)

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
