"""The embedded (SQLite) adapters in the contract suites; the namespace is a directory."""

from __future__ import annotations

from pathlib import Path

from chatcluster.adapters.embedded.admin import SqliteAdminStore
from chatcluster.adapters.embedded.bus import SqliteBus
from chatcluster.adapters.embedded.fanout import SqliteFanout
from chatcluster.adapters.embedded.moderation import SqliteModerationStore
from chatcluster.adapters.embedded.ratelimit import SqliteRateLimiter
from chatcluster.adapters.embedded.registry import SqliteRegistry
from chatcluster.adapters.embedded.sequencer import SqliteSequencer
from chatcluster.adapters.embedded.store import SqliteStore
from chatcluster.adapters.embedded.usage import SqliteUsageStore
from chatcluster.adapters.embedded.webhooks import SqliteWebhookStore

PORTS = {
    "admin": lambda ns: SqliteAdminStore(Path(ns)),
    "store": lambda ns: SqliteStore(Path(ns)),
    "sequencer": lambda ns: SqliteSequencer(Path(ns)),
    "bus": lambda ns: SqliteBus(Path(ns)),
    "fanout": lambda ns: SqliteFanout(Path(ns)),
    "registry": lambda ns: SqliteRegistry(Path(ns)),
    "ratelimit": lambda ns: SqliteRateLimiter(Path(ns)),
    "webhooks": lambda ns: SqliteWebhookStore(Path(ns)),
    "usage": lambda ns: SqliteUsageStore(Path(ns)),
    "moderation": lambda ns: SqliteModerationStore(Path(ns)),
}


def available() -> bool:
    return True
