"""The MongoDB Store in the contract suites, on the server of CHAT_STORE_URL (FerretDB here).

Each namespace is its own database, ``chat_test_<namespace>``: two openers on one namespace
share data, different namespaces never do. The databases this process created are dropped when
it exits; nothing else on the server is touched.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from chatcluster.adapters.mongodb.admin import MongoAdminStore
from chatcluster.adapters.mongodb.moderation import MongoModerationStore
from chatcluster.adapters.mongodb.store import MongoStore
from chatcluster.adapters.mongodb.usage import MongoUsageStore
from chatcluster.adapters.mongodb.webhooks import MongoWebhookStore

PREFIX = "chat_test_"
_created: set[str] = set()


def url() -> str:
    return os.environ["CHAT_STORE_URL"]


def database_name(namespace: str) -> str:
    return f"{PREFIX}{namespace}"


def open_store(namespace: str) -> MongoStore:
    name = database_name(namespace)
    _created.add(name)
    return MongoStore(url(), database=name)


def _drop_created() -> None:
    if not _created or "CHAT_STORE_URL" not in os.environ:
        return
    client: MongoClient[dict[str, Any]] = MongoClient(url(), serverSelectionTimeoutMS=2000)
    with contextlib.suppress(PyMongoError), client:
        for name in sorted(_created):
            client.drop_database(name)


atexit.register(_drop_created)

def open_webhooks(namespace: str) -> MongoWebhookStore:
    name = database_name(namespace)
    _created.add(name)
    return MongoWebhookStore(url(), database=name)


def open_usage(namespace: str) -> MongoUsageStore:
    name = database_name(namespace)
    _created.add(name)
    return MongoUsageStore(url(), database=name)


def open_admin(namespace: str) -> MongoAdminStore:
    name = database_name(namespace)
    _created.add(name)
    return MongoAdminStore(url(), database=name)


def open_moderation(namespace: str) -> MongoModerationStore:
    name = database_name(namespace)
    _created.add(name)
    return MongoModerationStore(url(), database=name)


PORTS = {"admin": open_admin, "moderation": open_moderation, "store": open_store,
         "webhooks": open_webhooks, "usage": open_usage}


def available() -> bool:
    return bool(os.environ.get("CHAT_STORE_URL"))
