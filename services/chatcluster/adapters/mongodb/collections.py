"""What every MongoDB adapter (store, admin, moderation, webhooks, usage) shares: one client with
durable defaults and fail-fast timeouts, collections and indexes created once and idempotently,
and connection failures surfaced as ``Unavailable``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, WriteConcernError

from chatcluster.domain.errors import Unavailable

Doc = dict[str, Any]

DEFAULT_DATABASE = "chatcluster"  # when neither the argument nor the URL's path names one
DUPLICATE_KEY = 11000
NAMESPACE_EXISTS = 48
# Fail a request fast when the server is down instead of waiting PyMongo's default 30 s.
SERVER_SELECTION_TIMEOUT_MS = 3_000
CONNECT_TIMEOUT_MS = 3_000
# Like the embedded store's busy timeout: a stuck server surfaces as "unavailable", not a hang.
SOCKET_TIMEOUT_MS = 30_000


class MongoCollections:
    """A client on one database whose ``INDEXES`` (collection -> index models; a collection
    without indexes maps to ``[]``) exist before the first operation of each instance."""

    INDEXES: dict[str, list[IndexModel]] = {}

    def __init__(self, url: str, database: str | None = None, **client_options: Any) -> None:
        given = {k.lower() for k, _ in parse_qsl(url.partition("?")[2])}
        given |= {k.lower() for k in client_options}
        defaults: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in given:
            defaults["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        if "connecttimeoutms" not in given:
            defaults["connectTimeoutMS"] = CONNECT_TIMEOUT_MS
        if "sockettimeoutms" not in given:
            defaults["socketTimeoutMS"] = SOCKET_TIMEOUT_MS
        if not given & {"w", "journal", "j"}:
            # The ports promise "durable on return": acknowledged by a majority, journaled.
            defaults.update(w="majority", journal=True)
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(url, **defaults, **client_options)
        self.db: AsyncDatabase[Doc] = (self.client[database] if database is not None else
                                       self.client.get_default_database(DEFAULT_DATABASE))
        self._ready = False
        self._setup_lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        """Create the collections and indexes if missing (idempotent; also done lazily)."""
        async with self._op():
            pass

    async def _prepare(self) -> None:
        """Before the collections are set up: what an adapter learns of the server."""

    async def _setup(self) -> None:
        async with self._setup_lock:
            if self._ready:
                return
            await self._prepare()
            existing = set(await self.db.list_collection_names())
            for name, models in self.INDEXES.items():
                if name not in existing:
                    try:
                        await self.db.create_collection(name, check_exists=False)
                    except OperationFailure as exc:
                        # Another process created it between our listing and this call.
                        if exc.code != NAMESPACE_EXISTS:
                            raise
                have = {ix["name"] async for ix in await self.db[name].list_indexes()}
                for model in models:
                    # One index per command, and only the missing ones: FerretDB v1.24 drops
                    # the connection (a server-side panic) when one createIndexes command names
                    # several indexes that exist already. Re-creating a single one is a no-op.
                    if model.document["name"] not in have:
                        await self.db[name].create_indexes([model])
            self._ready = True

    @contextlib.asynccontextmanager
    async def _op(self) -> AsyncIterator[None]:
        """Every operation runs inside: set up once, and map connection failures."""
        if self._closed:
            raise Unavailable("store is closed")
        try:
            if not self._ready:
                await self._setup()
            yield
        except ConnectionFailure as exc:
            detail = str(exc).split(",", 1)[0][:200]
            raise Unavailable(f"store unreachable ({type(exc).__name__}: {detail})") from exc
        except WriteConcernError as exc:
            # Applied, but not known to be durable: to the caller it is a retryable failure.
            raise Unavailable(f"store write not acknowledged as durable: {exc}") from exc
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise Unavailable("store write not acknowledged as durable") from exc
            raise

    @staticmethod
    async def _insert_new(collection: AsyncCollection[Doc], docs: list[Doc]) -> set[int]:
        """Insert unordered, skipping duplicate keys; the indexes of the skipped documents."""
        if not docs:
            return set()
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(
                    e.get("code") != DUPLICATE_KEY for e in errors):
                raise  # _op turns a write-concern failure into Unavailable
            return {int(e["index"]) for e in errors}
        return set()

    async def ping(self) -> None:
        async with self._op():
            await self.db.command("ping")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.client.close()
