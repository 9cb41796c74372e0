"""Usage: group "usage" counts messages and active users per app and UTC day; a sampler
records each day's peak of concurrent connections from the Registry.

Counting is by key (message id, sender), so a replayed record counts nothing twice; the day is
the message's own ``created_at``, so a replay lands on the same day. Tokens are counted by the
gateway and webhook deliveries by the dispatcher, into the same store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from chatcluster.domain.ids import now_rfc3339
from chatcluster.ports import bus as topics
from chatcluster.ports.bus import Record
from chatcluster.ports.events import MessageSent
from chatcluster.ports.registry import Registry
from chatcluster.ports.usage import ACTIVE_USERS, MESSAGES_SENT, UsageKey, UsageStore, day_of

log = logging.getLogger(__name__)

GROUP = "usage"
TOPICS = (topics.MESSAGE_SENT,)
# 5 s: a replica's heartbeat is 1 s and its presence changes at once, so a peak that lasts
# a few seconds is seen; shorter in tests (CHAT_USAGE_SAMPLE_S).
SAMPLE_S = 5.0
REPLICA_MAX_AGE_S = 3.0

_sent = msgspec.msgpack.Decoder(MessageSent)


class UsageMetrics:
    """Per app: new counts since this process started (exact: keys counted once), and the
    last connection sample. Label cardinality is one series per app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counted = Counter("chat_usage", "Usage counted, per app and metric",
                               ["app", "metric"], registry=registry)
        self.connections = Gauge("chat_usage_connections",
                                 "Concurrent connections per app at the last sample", ["app"],
                                 registry=registry)


def keys_of(records: list[Record]) -> list[UsageKey]:
    keys = []
    for r in records:
        if r.topic != topics.MESSAGE_SENT:
            continue
        s = _sent.decode(r.value)
        day = day_of(s.message.created_at)
        keys.append(UsageKey(s.app_id, day, MESSAGES_SENT, s.message.id))
        keys.append(UsageKey(s.app_id, day, ACTIVE_USERS, s.message.sender_id))
    return keys


async def process(store: UsageStore, records: list[Record],
                  metrics: UsageMetrics | None = None) -> int:
    """Count a batch; returns how many keys were new."""
    new = await store.record(keys_of(records))
    if metrics is not None:
        for k in new:
            metrics.counted.labels(k.app_id, k.metric).inc()
    return len(new)


async def sample_connections(store: UsageStore, registry: Registry,
                             metrics: UsageMetrics | None = None) -> dict[str, int]:
    counts = await registry.connections_by_app(REPLICA_MAX_AGE_S)
    day = day_of(now_rfc3339())
    for app_id, n in counts.items():
        await store.record_peak(app_id, day, n)
    if metrics is not None:
        for app_id, n in counts.items():
            metrics.connections.labels(app_id).set(n)
    return counts


async def run_sampler(store: UsageStore, registry: Registry, stop: asyncio.Event,
                      every_s: float = SAMPLE_S, metrics: UsageMetrics | None = None) -> None:
    while not stop.is_set():
        try:
            await sample_connections(store, registry, metrics)
        except Exception:
            log.exception("connection sample failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
