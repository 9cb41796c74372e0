"""Bans through the gateway in process, two gateway replicas on one embedded state: the sign-in
cache's bound (at once on the replica that banned, within about a second on the other) and
the route's answer when the ban's bus event cannot be published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatcluster.adapters.embedded.admin import SqliteAdminStore
from chatcluster.adapters.embedded.bus import SqliteBus
from chatcluster.adapters.embedded.fanout import SqliteFanout
from chatcluster.adapters.embedded.moderation import SqliteModerationStore
from chatcluster.adapters.embedded.registry import SqliteRegistry
from chatcluster.adapters.embedded.sequencer import SqliteSequencer
from chatcluster.adapters.embedded.store import SqliteStore
from chatcluster.auth.tokens import TokenIssuer
from chatcluster.gateway.admin import moderation as moderation_routes
from chatcluster.gateway.admin.auth import Auditor
from chatcluster.gateway.app import create_gateway, live_socket_urls
from chatcluster.gateway.signin import VERSION_POLL_S, SignInCache
from chatcluster.ports import bus as topics
from chatcluster.removal import MessageRemoval

ROOT = "root-token-for-tests-0123456789abcdef"


class FlakyBus:
    """The embedded bus, refusing ``user.moderated`` while ``down``."""

    def __init__(self, bus: SqliteBus) -> None:
        self.bus = bus
        self.down = False
        self.published: list[str] = []

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self.down and topic == topics.USER_MODERATED:
            raise ConnectionError("bus down")
        await self.bus.publish(topic, key, value)
        self.published.append(topic)

    def consumer(self, group: str, names: tuple[str, ...]) -> Any:
        return self.bus.consumer(group, names)

    async def close(self) -> None:
        await self.bus.close()


@dataclass
class Replicas:
    a: httpx.AsyncClient
    b: httpx.AsyncClient
    bus: FlakyBus
    app_id: str = ""
    app_secret: str = ""

    async def token(self, http: httpx.AsyncClient, user: str) -> int:
        r = await http.post("/api/v1/auth/sdk/token", json={
            "app_id": self.app_id, "app_secret": self.app_secret, "user_external_id": user})
        return r.status_code

    async def ban(self, http: httpx.AsyncClient, user: str, method: str = "PUT"
                  ) -> httpx.Response:
        return await http.request(method, f"/api/v1/admin/apps/{self.app_id}/users/{user}/ban",
                                  headers={"Authorization": f"Bearer {ROOT}"})


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Replicas]:
    store, admin_store = SqliteStore(tmp_path), SqliteAdminStore(tmp_path)
    moderation, registry = SqliteModerationStore(tmp_path), SqliteRegistry(tmp_path)
    fanout, sequencer = SqliteFanout(tmp_path), SqliteSequencer(tmp_path)
    bus = FlakyBus(SqliteBus(tmp_path))
    removal = MessageRemoval(store=store, sequencer=sequencer, bus=bus, fanout=fanout,
                             origin="gateway")

    def gateway() -> httpx.AsyncClient:
        signin = SignInCache(store, moderation, lambda: live_socket_urls(registry))
        routers = [lambda authorize: moderation_routes.build_router(
            authorize=authorize, store=store, moderation=moderation, fanout=fanout,
            sequencer=sequencer, removal=removal, auditor=Auditor(admin_store),
            on_change=signin.forget_moderation)]
        app = create_gateway(store=store, registry=registry, fanout=fanout,
                             tokens=TokenIssuer("j" * 48), admin_token=ROOT,
                             admin_store=admin_store, moderation=moderation,
                             admin_routers=routers, signin=signin)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway")

    found = Replicas(gateway(), gateway(), bus)
    created = await found.a.post("/api/v1/admin/apps", json={"name": "m"},
                                 headers={"Authorization": f"Bearer {ROOT}"})
    found.app_id, found.app_secret = created.json()["app_id"], created.json()["app_secret"]
    yield found
    await found.a.aclose()
    await found.b.aclose()
    for part in (bus, sequencer, fanout, registry, moderation, admin_store, store):
        await part.close()


async def test_a_ban_holds_at_once_here_and_within_a_second_on_another_gateway(
        replicas: Replicas) -> None:
    assert await replicas.token(replicas.a, "mallory") == 200
    assert await replicas.token(replicas.b, "mallory") == 200  # both caches hold "not banned"
    assert (await replicas.ban(replicas.a, "mallory")).status_code == 200
    banned_at = time.monotonic()
    assert await replicas.token(replicas.a, "mallory") == 403, "at once where it was made"
    while await replicas.token(replicas.b, "mallory") != 403:
        assert time.monotonic() - banned_at < 3 * VERSION_POLL_S, "the other replica never saw it"
        await asyncio.sleep(0.05)
    assert (await replicas.ban(replicas.b, "mallory", "DELETE")).status_code == 204
    assert await replicas.token(replicas.b, "mallory") == 200
    assert replicas.bus.published == [topics.USER_MODERATED] * 2


async def test_a_ban_whose_event_cannot_be_published_answers_503_and_holds(
        replicas: Replicas) -> None:
    assert await replicas.token(replicas.a, "oscar") == 200
    replicas.bus.down = True
    r = await replicas.ban(replicas.a, "oscar")
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert "send the request again" in r.json()["error"]["message"]
    assert await replicas.token(replicas.a, "oscar") == 403, "the ban is in force"
    replicas.bus.down = False
    assert (await replicas.ban(replicas.a, "oscar")).status_code == 200  # the retry publishes
    assert replicas.bus.published == [topics.USER_MODERATED]
