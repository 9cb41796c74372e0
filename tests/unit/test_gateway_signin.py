"""The gateway's sign-in cache (gateway/signin.py) and its request observer, in process.

The cache's promises: an app copy lives APP_TTL_S and a local change drops it at once; a ban
copy lives until the moderation version changes (read at most every VERSION_POLL_S) or a
local change; a read that started before a change is never kept; socket URLs live URLS_TTL_S.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from chatcluster.domain.model import App
from chatcluster.domain.moderation import Ban
from chatcluster.gateway.app import Observe
from chatcluster.gateway.signin import APP_TTL_S, URLS_TTL_S, VERSION_POLL_S, SignInCache
from chatcluster.ports.moderation import ModerationStore
from chatcluster.ports.store import Store

NOW = "2026-11-26T09:00:00.000Z"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Apps:
    def __init__(self) -> None:
        self.apps: dict[str, App] = {}
        self.reads = 0

    async def get_app(self, app_id: str) -> App | None:
        self.reads += 1
        return self.apps.get(app_id)


class Moderation:
    def __init__(self) -> None:
        self.bans: dict[tuple[str, str], Ban] = {}
        self.current_version = 1
        self.ban_reads = 0
        self.version_reads = 0
        self.gate: asyncio.Event | None = None  # holds get_ban until set

    async def get_ban(self, app_id: str, user_id: str) -> Ban | None:
        self.ban_reads += 1
        found = self.bans.get((app_id, user_id))
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def version(self) -> int:
        self.version_reads += 1
        return self.current_version

    def ban(self, user: str, expires_at: str | None = None) -> None:
        self.bans[("app", user)] = Ban(app_id="app", user_id=user, by="root", at=NOW,
                                       expires_at=expires_at)
        self.current_version += 1


def cache(apps: Apps, moderation: Moderation, clock: Clock,
          urls: list[list[str]] | None = None) -> SignInCache:
    answers = urls if urls is not None else [["ws://a"]]

    async def socket_urls() -> list[str]:
        return answers.pop(0)

    return SignInCache(cast(Store, apps), cast(ModerationStore, moderation), socket_urls,
                       clock)


def app(disabled: bool = False) -> App:
    return App(id="app", name="n", secret_digest="d", created_at=NOW, disabled=disabled)


async def test_an_app_is_read_once_per_ttl_and_a_local_change_drops_it() -> None:
    apps, clock = Apps(), Clock()
    apps.apps["app"] = app()
    c = cache(apps, Moderation(), clock)
    assert (await c.app("app")) == app() and apps.reads == 1
    apps.apps["app"] = app(disabled=True)
    clock.now += APP_TTL_S / 2
    assert not (await c.app("app")).disabled, "within the TTL the copy answers"
    assert apps.reads == 1
    assert (await c.app("app", fresh=True)).disabled and apps.reads == 2
    apps.apps["app"] = app()
    c.forget_app("app")
    assert not (await c.app("app")).disabled and apps.reads == 3
    apps.apps["app"] = app(disabled=True)
    clock.now += APP_TTL_S + 0.01
    assert (await c.app("app")).disabled, "after the TTL the store answers"


async def test_an_unknown_app_is_never_cached() -> None:
    apps = Apps()
    c = cache(apps, Moderation(), Clock())
    assert await c.app("app") is None
    apps.apps["app"] = app()
    assert await c.app("app") == app()
    assert apps.reads == 2


async def test_bans_are_kept_until_the_moderation_version_moves() -> None:
    moderation, clock = Moderation(), Clock()
    c = cache(Apps(), moderation, clock)
    assert not await c.banned("app", "ann", NOW)
    assert not await c.banned("app", "ann", NOW)
    assert (moderation.ban_reads, moderation.version_reads) == (1, 1)
    moderation.ban("ann")  # on another gateway: this one learns it from the version
    assert not await c.banned("app", "ann", NOW), "the version is not due yet"
    clock.now += VERSION_POLL_S
    assert await c.banned("app", "ann", NOW)
    assert (moderation.ban_reads, moderation.version_reads) == (2, 2)
    clock.now += VERSION_POLL_S  # due, unchanged: the copy stays
    assert await c.banned("app", "ann", NOW)
    assert (moderation.ban_reads, moderation.version_reads) == (2, 3)


async def test_a_local_change_drops_bans_at_once_and_expiry_needs_no_refresh() -> None:
    moderation = Moderation()
    c = cache(Apps(), moderation, Clock())
    assert not await c.banned("app", "bob", NOW)
    moderation.ban("bob", expires_at="2026-11-26T10:00:00.000Z")
    c.forget_moderation()
    assert await c.banned("app", "bob", NOW)
    assert not await c.banned("app", "bob", "2026-11-26T10:00:00.001Z"), "expired"
    assert moderation.ban_reads == 2


async def test_a_ban_read_that_raced_a_change_is_not_kept() -> None:
    moderation = Moderation()
    c = cache(Apps(), moderation, Clock())
    await c.banned("app", "warm", NOW)  # the version check is done
    moderation.gate = asyncio.Event()
    slow = asyncio.create_task(c.banned("app", "cy", NOW))
    await asyncio.sleep(0)  # the read started and saw no ban
    moderation.ban("cy")
    c.forget_moderation()
    moderation.gate.set()
    assert not await slow, "the read answers what it saw"
    assert await c.banned("app", "cy", NOW), "but its answer was not kept"


async def test_a_failed_version_read_forgets_bans_and_is_retried() -> None:
    moderation, clock = Moderation(), Clock()
    c = cache(Apps(), moderation, clock)
    assert not await c.banned("app", "dee", NOW)
    clock.now += VERSION_POLL_S

    async def down() -> int:
        raise ConnectionError("store down")
    moderation.version = down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):  # the route answers it (503), never a stale "no"
        await c.banned("app", "dee", NOW)
    del moderation.version  # the class's method again
    moderation.ban("dee")
    assert await c.banned("app", "dee", NOW), "read again on the next request"


async def test_socket_urls_are_kept_for_their_ttl() -> None:
    clock = Clock()
    c = cache(Apps(), Moderation(), clock, urls=[["ws://a"], ["ws://b"]])
    assert await c.socket_urls() == ["ws://a"]
    clock.now += URLS_TTL_S / 2
    assert await c.socket_urls() == ["ws://a"]
    clock.now += URLS_TTL_S
    assert await c.socket_urls() == ["ws://b"]


def observed_app() -> tuple[FastAPI, CollectorRegistry]:
    registry = CollectorRegistry()
    api = FastAPI()
    api.add_middleware(Observe, requests=Counter("req", "r", ["route", "status"],
                                                 registry=registry),
                       latency=Histogram("lat", "l", ["route"], registry=registry))

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        if item_id == 0:
            raise RuntimeError("boom")
        return {"id": item_id}

    return api, registry


async def test_the_observer_counts_by_route_and_answers_a_crash_with_json_500() -> None:
    api, registry = observed_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api, raise_app_exceptions=False),
                                 base_url="http://t") as http:
        assert (await http.get("/items/7")).json() == {"id": 7}
        crashed = await http.get("/items/0")
        assert crashed.status_code == 500
        assert crashed.json() == {"error": {"code": "internal", "message": "internal error"}}
        assert (await http.get("/nowhere")).status_code == 404
    text = generate_latest(registry).decode()
    assert 'req_total{route="/items/{item_id}",status="200"} 1.0' in text
    assert 'req_total{route="/items/{item_id}",status="500"} 1.0' in text
    assert 'req_total{route="unmatched",status="404"} 1.0' in text
    assert 'lat_count{route="/items/{item_id}"} 2.0' in text
