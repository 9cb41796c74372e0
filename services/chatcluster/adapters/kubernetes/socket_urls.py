"""The operator's list of ready socket URLs, read live through the Kubernetes API.

On Kubernetes the operator writes the client-reachable URLs of the *ready* socket replicas into
the ConfigMap ``<cluster>-socket-urls`` (key ``socket_urls``, a JSON list). The gateway watches
that one object (PROTOCOL.md §4): a mounted ConfigMap would be refreshed by the kubelet only
about once a minute, a watch sees the change within a second.

``SocketUrlsWatch.current()`` is None until the first read succeeded (the gateway then falls
back to its replica registry), afterwards the last list seen, kept through reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiohttp

from chatcluster.adapters.kubernetes.api import (
    ApiError,
    Connection,
    KubeApi,
    resource_path,
    sleep_backoff,
)

log = logging.getLogger(__name__)
KEY = "socket_urls"


def parse_socket_urls(configmap: dict[str, Any] | None) -> list[str]:
    """The list in a ConfigMap (empty if absent or malformed: no replica is better than a
    wrong one)."""
    raw = ((configmap or {}).get("data") or {}).get(KEY, "[]")
    try:
        urls = json.loads(raw)
    except ValueError:
        return []
    return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []


class SocketUrlsWatch:
    def __init__(self, namespace: str, name: str, conn: Connection | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self._conn = conn
        self._urls: list[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Condition()

    @classmethod
    def from_setting(cls, value: str) -> SocketUrlsWatch:
        """``CHAT_SOCKET_URLS_CONFIGMAP=<namespace>/<name>``."""
        namespace, sep, name = value.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"CHAT_SOCKET_URLS_CONFIGMAP={value!r}: expected NAMESPACE/NAME")
        return cls(namespace, name)

    def current(self) -> list[str] | None:
        return None if self._urls is None else list(self._urls)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="socket-urls-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _set(self, urls: list[str]) -> None:
        if urls != self._urls:
            log.info("socket urls changed", extra={"fields": {"socket_urls": urls}})
        async with self.changed:
            self._urls = urls
            self.changed.notify_all()

    async def _run(self) -> None:
        api = KubeApi(self._conn or Connection.from_env())
        path = resource_path("v1", "ConfigMap", self.namespace)
        fields = f"metadata.name={self.name}"
        attempt = 0
        try:
            while True:
                try:
                    # List then watch from the list's resourceVersion: nothing is missed
                    # between the two, and a restarted watch starts from a fresh read.
                    listing = await api.request("GET", path, params={"fieldSelector": fields})
                    items = listing.get("items") or []
                    await self._set(parse_socket_urls(items[0] if items else None))
                    version = listing["metadata"].get("resourceVersion")
                    attempt = 0
                    async for kind, obj in api.watch(path, fields=fields,
                                                     resource_version=version):
                        if kind in ("ADDED", "MODIFIED"):
                            await self._set(parse_socket_urls(obj))
                        elif kind == "DELETED":
                            await self._set([])
                        elif kind == "ERROR":  # e.g. 410 Gone: list again
                            break
                except (ApiError, aiohttp.ClientError, OSError, ValueError, KeyError,
                        TimeoutError) as exc:
                    log.warning("socket urls watch failed; retrying",
                                extra={"fields": {"error": repr(exc)}})
                    await sleep_backoff(attempt)
                    attempt += 1
        finally:
            await api.close()
