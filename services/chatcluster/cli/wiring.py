"""Backends by URL (``--store``, ``--bus``, ``--cache`` or CHAT_STORE_URL, CHAT_BUS_URL,
CHAT_CACHE_URL), and the state directory's credentials."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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
from chatcluster.adapters.kafka.bus import KafkaBus
from chatcluster.adapters.kubernetes.socket_urls import SocketUrlsWatch
from chatcluster.adapters.mongodb.admin import MongoAdminStore
from chatcluster.adapters.mongodb.moderation import MongoModerationStore
from chatcluster.adapters.mongodb.store import MongoStore
from chatcluster.adapters.mongodb.usage import MongoUsageStore
from chatcluster.adapters.mongodb.webhooks import MongoWebhookStore
from chatcluster.adapters.redis.fanout import RedisFanout
from chatcluster.adapters.redis.membership import RedisMembershipCache
from chatcluster.adapters.redis.ratelimit import RedisRateLimiter
from chatcluster.adapters.redis.registry import RedisRegistry
from chatcluster.adapters.redis.sequencer import RedisSequencer
from chatcluster.auth.tokens import ACCESS_TTL_S, REFRESH_TTL_S, TokenIssuer, new_secret
from chatcluster.domain.ids import new_id
from chatcluster.ports.admin import AdminStore
from chatcluster.ports.bus import Bus
from chatcluster.ports.fanout import Fanout
from chatcluster.ports.membership import MembershipCache
from chatcluster.ports.moderation import ModerationStore
from chatcluster.ports.ratelimit import RateLimiter
from chatcluster.ports.registry import Registry
from chatcluster.ports.sequencer import Sequencer
from chatcluster.ports.store import Store
from chatcluster.ports.usage import UsageStore
from chatcluster.ports.webhooks import WebhookStore

EMBEDDED = ("", "embedded")
SCHEMES = {"store": ("mongodb://", "mongodb+srv://"), "bus": ("kafka://",),
           "cache": ("redis://", "rediss://")}


class ConfigError(Exception):
    """A setting the user must fix; printed without a traceback."""


@dataclass
class BackendUrls:
    """Where each backend lives: "" (or "embedded") for the SQLite files in the state
    directory, else ``mongodb://`` for the Store, ``kafka://`` for the Bus, ``redis://`` for the
    Fanout and Registry (and, with a MongoDB store, the Sequencer)."""

    store: str = ""
    bus: str = ""
    cache: str = ""
    # Several clusters may share one Kafka and one Redis: the namespace prefixes their topics,
    # consumer groups and keys (CHAT_NAMESPACE). The MongoDB database is the URL's path.
    namespace: str = ""

    @classmethod
    def resolve(cls, store: str | None, bus: str | None, cache: str | None) -> BackendUrls:
        return cls(store=store if store is not None else os.environ.get("CHAT_STORE_URL", ""),
                   bus=bus if bus is not None else os.environ.get("CHAT_BUS_URL", ""),
                   cache=cache if cache is not None else os.environ.get("CHAT_CACHE_URL", ""),
                   namespace=os.environ.get("CHAT_NAMESPACE", ""))

    @property
    def key_prefix(self) -> str:
        return f"chat:{self.namespace}:" if self.namespace else "chat:"

    @property
    def topic_prefix(self) -> str:
        return f"{self.namespace}." if self.namespace else ""

    def check(self) -> None:
        for name, url in (("store", self.store), ("bus", self.bus), ("cache", self.cache)):
            if url not in EMBEDDED and not url.startswith(SCHEMES[name]):
                raise ConfigError(f"--{name} {url!r}: expected 'embedded' or a URL starting "
                                  f"with {' or '.join(SCHEMES[name])}")

    def embedded(self, name: str) -> bool:
        return getattr(self, name) in EMBEDDED


@dataclass
class Backends:
    store: Store
    sequencer: Sequencer
    bus: Bus
    fanout: Fanout
    registry: Registry
    # Shared membership tier (Redis); embedded: none, the store is a local file already.
    membership: MembershipCache | None = None

    async def close(self) -> None:
        for part in (self.fanout, self.bus, self.sequencer, self.registry, self.store):
            await part.close()
        if self.membership is not None:
            await self.membership.close()


def open_store(state_dir: Path, urls: BackendUrls) -> Store:
    return SqliteStore(state_dir / "data") if urls.embedded("store") else MongoStore(urls.store)


def open_rate_limiter(state_dir: Path, urls: BackendUrls) -> RateLimiter:
    """Quota counters: beside the fan-out (Redis, or a file in the state directory)."""
    if urls.embedded("cache"):
        return SqliteRateLimiter(state_dir / "data")
    return RedisRateLimiter(urls.cache, prefix=urls.key_prefix)


def open_admin_store(state_dir: Path, urls: BackendUrls) -> AdminStore:
    """Admins, audit log and app settings: beside the Store (same database or directory)."""
    if urls.embedded("store"):
        return SqliteAdminStore(state_dir / "data")
    return MongoAdminStore(urls.store)


def open_webhook_store(state_dir: Path, urls: BackendUrls) -> WebhookStore:
    """Webhook endpoints and the delivery outbox: beside the Store."""
    if urls.embedded("store"):
        return SqliteWebhookStore(state_dir / "data")
    return MongoWebhookStore(urls.store)


def open_usage_store(state_dir: Path, urls: BackendUrls) -> UsageStore:
    """Usage per app and day: beside the Store."""
    if urls.embedded("store"):
        return SqliteUsageStore(state_dir / "data")
    return MongoUsageStore(urls.store)


def open_moderation_store(state_dir: Path, urls: BackendUrls) -> ModerationStore:
    """Bans, mutes, freezes, devices, and the admin's reads of users and messages: on the
    Store's own data (``store.db``, or the Store's MongoDB database)."""
    if urls.embedded("store"):
        return SqliteModerationStore(state_dir / "data")
    return MongoModerationStore(urls.store)


def open_registry(state_dir: Path, urls: BackendUrls) -> Registry:
    if urls.embedded("cache"):
        return SqliteRegistry(state_dir / "data")
    return RedisRegistry(urls.cache, prefix=urls.key_prefix)


def kafka_partitions(url: str) -> int:
    """``kafka://host:port?partitions=N``: partitions of the topics this cluster creates (8 by
    default: enough consumers in a group to spread a conversation-keyed load)."""
    values = parse_qs(urlsplit(url).query).get("partitions", ["8"])
    try:
        partitions = int(values[0])
    except ValueError:
        partitions = 0
    if partitions < 1:
        raise ConfigError(f"--bus {url!r}: partitions must be a positive integer")
    return partitions


def open_backends(state_dir: Path, urls: BackendUrls) -> Backends:
    """Every port, each on the backend its URL names. Clients connect lazily on first use."""
    urls.check()
    data = state_dir / "data"
    sequencer: Sequencer
    fanout: Fanout
    if urls.embedded("cache"):
        fanout = SqliteFanout(data)
        sequencer = SqliteSequencer(data)
    else:
        fanout = RedisFanout(urls.cache, prefix=urls.key_prefix)
        # Redis numbers, fenced by durable high-water marks in MongoDB; without a MongoDB
        # store the counters stay in the state directory.
        sequencer = (SqliteSequencer(data) if urls.embedded("store")
                     else RedisSequencer(urls.cache, urls.store, prefix=urls.key_prefix))
    return Backends(store=open_store(state_dir, urls), sequencer=sequencer,
                    bus=SqliteBus(data) if urls.embedded("bus") else KafkaBus(
                        urls.bus, topic_prefix=urls.topic_prefix,
                        group_prefix=urls.topic_prefix, partitions=kafka_partitions(urls.bus)),
                    fanout=fanout, registry=open_registry(state_dir, urls),
                    membership=None if urls.embedded("cache") else RedisMembershipCache(
                        urls.cache, prefix=urls.key_prefix))


@dataclass
class Credentials:
    jwt_secret: str
    admin_token: str
    app_id: str
    app_secret: str

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Credentials:
        """The cluster's secrets, made on first start and kept (mode 0600) across restarts."""
        path = state_dir / "credentials.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        creds = cls(jwt_secret=secrets.token_urlsafe(48), admin_token=secrets.token_urlsafe(32),
                    app_id=new_id("app"), app_secret=new_secret())
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds.__dict__, f)
        os.replace(tmp, path)
        return creds

    @classmethod
    def save_admin_token(cls, state_dir: Path, admin_token: str) -> None:
        """Keep a rotated root token, so the next ``chatcluster up`` prints the one that works."""
        path = state_dir / "credentials.json"
        creds = cls(**{**json.loads(path.read_text()), "admin_token": admin_token})
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds.__dict__, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, state_dir: Path) -> Credentials:
        path = state_dir / "credentials.json"
        if not path.exists():
            raise ConfigError(f"{path} is missing: start the cluster with 'chatcluster up' "
                              f"or point --state-dir at its state directory")
        return cls(**json.loads(path.read_text()))


def token_issuer(creds: Credentials) -> TokenIssuer:
    return TokenIssuer(
        os.environ.get("CHAT_JWT_SECRET") or creds.jwt_secret,
        access_ttl=int(os.environ.get("CHAT_ACCESS_TTL_S", str(ACCESS_TTL_S))),
        refresh_ttl=int(os.environ.get("CHAT_REFRESH_TTL_S", str(REFRESH_TTL_S))))


def socket_urls_watch() -> SocketUrlsWatch | None:
    """On Kubernetes (CHAT_SOCKET_URLS_CONFIGMAP=<namespace>/<name>, set by the operator) the
    gateway offers the operator's list of ready replicas, read through a watch."""
    value = os.environ.get("CHAT_SOCKET_URLS_CONFIGMAP", "")
    if not value:
        return None
    try:
        return SocketUrlsWatch.from_setting(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
