"""Message retention: a scheduled job of the consumers process (docs/moderation.md).

Every ``interval_s`` it reads each app's ``message_retention_days`` (the AdminStore's app
settings; unset means "keep forever") and tombstones the app's messages created before
``now - days``, through ``MessageRemoval``: the path of a member's delete, so the text goes,
members and webhooks get ``message.deleted``, and ``conversation.sync`` shows the tombstone.

Idempotent: a tombstone is never removed again, and a message this process removed is skipped
until the persist consumer has written its tombstone. Several consumers processes running the
job at once only add duplicate (harmless) ``message.deleted`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from chatcluster.domain.ids import rfc3339
from chatcluster.domain.moderation import retention_cutoff
from chatcluster.ports.admin import AdminStore
from chatcluster.ports.moderation import ModerationStore
from chatcluster.ports.store import Store
from chatcluster.removal import MessageRemoval

log = logging.getLogger(__name__)

INTERVAL_S = 600.0  # CHAT_RETENTION_INTERVAL_S
DAY_S = 86_400.0  # CHAT_RETENTION_DAY_S: a day's length (tests shorten it)
BATCH = 500  # messages per read; a run goes on until an app has none left
ACTOR = "retention"
REMEMBERED = 100_000


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.removed = Counter("chat_retention_messages_removed",
                               "Messages tombstoned by the retention job", registry=registry)
        self.runs = Counter("chat_retention_runs", "Retention job runs", ["outcome"],
                            registry=registry)
        self.last_run = Gauge("chat_retention_last_run_timestamp_seconds",
                              "When the retention job last finished", registry=registry)


class RetentionJob:
    def __init__(self, *, store: Store, moderation: ModerationStore, admin: AdminStore,
                 removal: MessageRemoval, metrics: RetentionMetrics,
                 interval_s: float = INTERVAL_S, day_s: float = DAY_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.moderation = moderation
        self.admin = admin
        self.removal = removal
        self.metrics = metrics
        self.interval_s = interval_s
        self.day_s = day_s
        self.clock = clock
        # Removed here, maybe not yet tombstoned by the persist consumer: not removed twice.
        self._removed: OrderedDict[str, None] = OrderedDict()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
                self.metrics.runs.labels("ok").inc()
            except Exception:
                self.metrics.runs.labels("failed").inc()
                log.exception("retention run failed")
            self.metrics.last_run.set(self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def run_once(self) -> int:
        """One pass over every app; the number of messages tombstoned."""
        removed = 0
        after: str | None = None
        while True:
            apps = await self.store.list_apps(after, 100)
            if not apps:
                return removed
            after = apps[-1].id
            for app in apps:
                settings = await self.admin.get_app_settings(app.id)
                days = settings.message_retention_days if settings is not None else None
                if days:
                    removed += await self._expire(app.id, days)

    async def _expire(self, app_id: str, days: int) -> int:
        before = rfc3339(retention_cutoff(self.clock(), days, self.day_s))
        removed = 0
        while True:
            states = [s for s in await self.moderation.messages_created_before(
                app_id, before, BATCH) if s.message.id not in self._removed]
            if not states:
                return removed
            for state in states:
                await self.removal.remove(state, ACTOR)
                self._removed[state.message.id] = None
                if len(self._removed) > REMEMBERED:
                    self._removed.popitem(last=False)
                removed += 1
                self.metrics.removed.inc()
            log.info("retention: messages tombstoned",
                     extra={"fields": {"app": app_id, "count": len(states)}})
            if len(states) < BATCH:
                return removed
