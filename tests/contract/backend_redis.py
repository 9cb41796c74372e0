"""The Redis adapters in the contract suites (``eval "$(scripts/services up)"`` first).

Namespaces: every key of namespace ``ns`` starts with ``chat:test:<ns>:``, and the
sequencer keeps its MongoDB marks in collection ``sequencer_hwm_<ns>`` of database
``<the URL's database>_test`` (``chatcluster_test``), so runs never see each other's data
and the shared servers' own data is never touched. When the process exits, the keys and
collections of the namespaces it opened are deleted (nothing else: never FLUSHDB).
"""

from __future__ import annotations

import atexit
import contextlib
import os

from pymongo import MongoClient
from pymongo.uri_parser import parse_uri
from redis import Redis

from chatcluster.adapters.redis.fanout import RedisFanout
from chatcluster.adapters.redis.membership import RedisMembershipCache
from chatcluster.adapters.redis.ratelimit import RedisRateLimiter
from chatcluster.adapters.redis.registry import RedisRegistry
from chatcluster.adapters.redis.sequencer import RedisSequencer

_opened: set[str] = set()

# Reservations of test runs need not outlive the run by a week.
TEST_RESERVATION_TTL_S = 3600


def redis_url() -> str:
    return os.environ["CHAT_CACHE_URL"]


def mongodb_url() -> str:
    return os.environ["CHAT_STORE_URL"]


def prefix(ns: str) -> str:
    _opened.add(ns)
    return f"chat:test:{ns}:"


def hwm_database() -> str:
    return f"{parse_uri(mongodb_url()).get('database') or 'chatcluster'}_test"


def hwm_collection(ns: str) -> str:
    return f"sequencer_hwm_{ns}"


def open_sequencer(ns: str, block: int = 1000) -> RedisSequencer:
    return RedisSequencer(redis_url(), mongodb_url(), prefix(ns), block,
                          reservation_ttl_s=TEST_RESERVATION_TTL_S,
                          database=hwm_database(), collection=hwm_collection(ns))


@atexit.register
def _cleanup() -> None:
    if not _opened or not available():
        return
    with contextlib.suppress(Exception), Redis.from_url(redis_url()) as client:
        for ns in sorted(_opened):
            keys = list(client.scan_iter(match=f"chat:test:{ns}:*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
    if _sequencer_available():
        with contextlib.suppress(Exception), MongoClient(
                mongodb_url(), serverSelectionTimeoutMS=2000, socketTimeoutMS=5000) as mongo:
            db = mongo.get_database(hwm_database())
            for ns in sorted(_opened):
                db.drop_collection(hwm_collection(ns))


def _sequencer_available() -> bool:
    return os.environ.get("CHAT_STORE_URL", "").startswith("mongodb://")


PORTS = {
    "fanout": lambda ns: RedisFanout(redis_url(), prefix(ns)),
    "registry": lambda ns: RedisRegistry(redis_url(), prefix(ns)),
    "membership": lambda ns: RedisMembershipCache(redis_url(), prefix(ns), ttl_s=1.0),
    "ratelimit": lambda ns: RedisRateLimiter(redis_url(), prefix(ns)),
    **({"sequencer": open_sequencer} if _sequencer_available() else {}),
}


def available() -> bool:
    return os.environ.get("CHAT_CACHE_URL", "").startswith("redis://")
