"""A small test client of the public contract: HTTP gateway calls and a WebSocket client that
matches responses by id and queues server pushes, so tests read like the protocol."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from chatcluster.adapters.kafka.bus import bootstrap_servers


@dataclass
class Cluster:
    """A running ``chatcluster up --json`` and what its ready line said."""

    gateway_url: str
    socket_urls: list[str]
    app_id: str
    app_secret: str
    admin_token: str
    state_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # what start_cluster overrode

    async def token(self, user: str, *, app_id: str | None = None,
                    app_secret: str | None = None, display_name: str | None = None
                    ) -> dict[str, Any]:
        body: dict[str, Any] = {"app_id": app_id or self.app_id,
                                "app_secret": app_secret or self.app_secret,
                                "user_external_id": user}
        if display_name is not None:
            body["display_name"] = display_name
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=10) as http:
            r = await http.post("/api/v1/auth/sdk/token", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def new_app(self, name: str = "other") -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=10) as http:
            r = await http.post("/api/v1/admin/apps", json={"name": name},
                                headers={"Authorization": f"Bearer {self.admin_token}"})
        assert r.status_code == 201, r.text
        return r.json()["app_id"], r.json()["app_secret"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._release()

    def kill_group(self) -> None:
        """``kill -9`` of up and every child: the crash the durability guarantee is about."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._release()

    def _release(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()


def production_env(name: str) -> dict[str, str]:
    """Environment for a cluster on the real servers of ``scripts/services up``, isolated from
    every other cluster sharing them: its own namespace (topics, groups, keys) and database."""
    namespace = f"{name}{uuid.uuid4().hex[:8]}"
    store = os.environ["CHAT_STORE_URL"].rsplit("/", 1)[0] + f"/chat_{namespace}"
    return {"CHAT_NAMESPACE": namespace, "CHAT_STORE_URL": store,
            "CHAT_BUS_URL": os.environ["CHAT_BUS_URL"],
            "CHAT_CACHE_URL": os.environ["CHAT_CACHE_URL"]}


def embedded_env() -> dict[str, str]:
    return {"CHAT_STORE_URL": "", "CHAT_BUS_URL": "", "CHAT_CACHE_URL": "",
            "CHAT_NAMESPACE": ""}


def have_real_servers() -> bool:
    return all(os.environ.get(k) for k in ("CHAT_STORE_URL", "CHAT_BUS_URL", "CHAT_CACHE_URL"))


def start_cluster(state_dir: Path, *extra: str, timeout: float = 90,
                  env: dict[str, str] | None = None) -> Cluster:
    """Start ``chatcluster up --json`` in its own process group and wait for its ready line.

    ``env`` overrides the environment: ``embedded_env()`` (the default) or
    ``production_env(...)``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir.parent / f"{state_dir.name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatcluster", "up", "--json", "--state-dir",
             str(state_dir), *extra], stdout=subprocess.PIPE, stderr=log,
            start_new_session=True, env={**os.environ, **(env or embedded_env())})
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        chunk = proc.stdout.readline()
        if chunk:
            line += chunk
            if line.endswith(b"\n"):
                break
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    if not line.endswith(b"\n"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        raise RuntimeError(f"cluster did not become ready; see {log_path}:\n"
                           + log_path.read_text()[-3000:])
    ready = json.loads(line)
    assert ready["event"] == "ready"
    return Cluster(ready["gateway_url"], ready["socket_urls"], ready["app_id"],
                   ready["app_secret"], ready["admin_token"], state_dir, proc, log_path,
                   env or embedded_env())


class RequestFailed(AssertionError):
    pass


@dataclass
class Client:
    """One WebSocket connection speaking the protocol."""

    ws: ClientConnection
    user: str
    ready: dict[str, Any]
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    responses: dict[str | None, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    uncorrelated: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, token: str, user: str = "?", *, via: str = "header",
                      **kwargs: Any) -> Client:
        if via == "header":
            ws = await websockets.connect(url, additional_headers={
                "Authorization": f"Bearer {token}"}, max_size=None, **kwargs)
        else:
            ws = await websockets.connect(f"{url}/?access_token={token}", max_size=None,
                                          **kwargs)
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["event"] == "ready", first
        client = cls(ws=ws, user=user, ready=first["data"])
        client._reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            await self._read_frames()
        finally:  # the connection is gone: nothing pending will be answered
            for fut in self.responses.values():
                if not fut.done():
                    fut.set_exception(websockets.ConnectionClosedError(None, None))
            self.responses.clear()

    async def _read_frames(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                if "event" in frame:
                    self.events.put_nowait(frame)
                    continue
                fut = self.responses.pop(frame.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                else:
                    self.uncorrelated.append(frame)

    async def request(self, op: str, data: dict[str, Any] | None = None,
                      timeout: float = 10) -> dict[str, Any]:
        rid = f"r{next(self._ids)}"
        if self._reader is not None and self._reader.done():
            raise websockets.ConnectionClosedError(None, None)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.responses[rid] = fut
        await self.ws.send(json.dumps({"id": rid, "op": op, "data": data or {}}))
        return await asyncio.wait_for(fut, timeout)

    async def ok(self, op: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        frame = await self.request(op, data)
        if not frame.get("ok"):
            raise RequestFailed(f"{op} failed: {frame}")
        return dict(frame["data"])

    async def error(self, op: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        frame = await self.request(op, data)
        assert frame["ok"] is False, f"{op} unexpectedly succeeded: {frame}"
        return dict(frame["error"])

    async def send_raw(self, raw: str | bytes) -> None:
        await self.ws.send(raw)

    async def next_uncorrelated(self, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.uncorrelated:
            if time.monotonic() > deadline:
                raise AssertionError("no uncorrelated response arrived")
            await asyncio.sleep(0.01)
        return self.uncorrelated.pop(0)

    async def event(self, name: str, timeout: float = 5, **match: Any) -> dict[str, Any]:
        """The next event called ``name`` whose data contains ``match``; others are kept."""
        deadline = time.monotonic() + timeout
        skipped: list[dict[str, Any]] = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.user}: no {name} {match} within {timeout}s; "
                                         f"saw {[f['event'] for f in skipped]}")
                try:
                    frame = await asyncio.wait_for(self.events.get(), remaining)
                except TimeoutError:
                    continue
                if frame["event"] == name and _contains(frame["data"], match):
                    return frame
                skipped.append(frame)
        finally:
            for frame in skipped:
                self.events.put_nowait(frame)

    async def no_event(self, name: str, within: float = 0.5, **match: Any) -> None:
        with contextlib.suppress(AssertionError):
            frame = await self.event(name, timeout=within, **match)
            raise RequestFailed(f"{self.user}: unexpected {name}: {frame}")

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    async def closed_with(self, timeout: float = 5) -> int | None:
        """Wait for the server to close this connection; its close code."""
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


def _contains(data: Any, match: dict[str, Any]) -> bool:
    return all(isinstance(data, dict) and data.get(k) == v for k, v in match.items())


T = TypeVar("T")


async def wait_for(check: Callable[[], Awaitable[T | None]], timeout: float = 5.0,
                   interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``. Tests wait for
    the contract's deadlines this way, generously; they never time them."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(interval)


async def poll(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool],
               timeout: float = 10.0) -> T:
    """Fetch until ``done`` holds or ``timeout`` passes; the last value either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def group(owner: Client, *members: str, title: str = "g") -> str:
    """Create a group of ``owner`` and ``members``; its id."""
    data = await owner.ok("conversation.create",
                          {"type": "group", "members": list(members), "title": title})
    return str(data["conversation"]["id"])


async def all_history(client: Client, cid: str) -> list[dict[str, Any]]:
    """Every message of a conversation, oldest first, following has_more."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await client.ok("message.history", {"conversation_id": cid, "after_seq": after,
                                                   "limit": 100})
        out += page["messages"]
        if not page["has_more"]:
            return out
        after = out[-1]["seq"]


async def forget_cluster(env: dict[str, str]) -> None:
    """Delete what one stopped test cluster left on the shared servers (best effort): its
    Kafka topics (``<namespace>.*``; each cluster makes 5 x 8 partitions, which slow every
    broker restart), its MongoDB database and its Redis keys (``chat:<namespace>:*``)."""
    namespace = env["CHAT_NAMESPACE"]
    with contextlib.suppress(Exception):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(env["CHAT_BUS_URL"]),
                                    request_timeout_ms=10_000)
        try:
            await admin.start()
            mine = [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()
    with contextlib.suppress(Exception):
        mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            env["CHAT_STORE_URL"], serverSelectionTimeoutMS=5000)
        try:
            await mongo.drop_database(mongo.get_default_database().name)
        finally:
            await mongo.close()
    with contextlib.suppress(Exception):
        redis = Redis.from_url(env["CHAT_CACHE_URL"])
        try:
            keys = [k async for k in redis.scan_iter(match=f"chat:{namespace}:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await redis.delete(*keys[i:i + 1000])
        finally:
            await redis.aclose()
