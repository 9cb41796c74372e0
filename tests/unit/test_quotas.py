"""Quotas: settings come from a cache that a slow or stopped settings store never holds up."""

from __future__ import annotations

import asyncio
import time

from chatcluster import quotas as q
from chatcluster.ports.admin import AppSettings
from chatcluster.ports.ratelimit import Limit


class Limiter:
    def __init__(self) -> None:
        self.seen: list[list[Limit]] = []

    async def acquire(self, limits: list[Limit], now: float) -> float:
        self.seen.append(limits)
        return 0.0

    async def close(self) -> None:
        return None


class Settings:
    def __init__(self) -> None:
        self.value = AppSettings(app_id="a1", messages_per_minute_per_user=7)
        self.hang = False
        self.reads = 0

    async def get_app_settings(self, app_id: str) -> AppSettings | None:
        self.reads += 1
        if self.hang:
            await asyncio.sleep(3600)
        return self.value


async def test_limits_come_from_the_apps_settings_else_the_defaults() -> None:
    limiter, settings = Limiter(), Settings()
    quotas = q.Quotas(limiter, settings)  # type: ignore[arg-type]
    assert await quotas.send("a1", "alice") == 0.0
    assert await quotas.token("a1", "alice") == 0.0
    user_send, app_send = limiter.seen[0]
    assert (user_send.key, user_send.limit) == ("send:user:a1:alice", 7)
    assert (app_send.key, app_send.limit) == ("send:app:a1", q.DEFAULT_MESSAGES_PER_MINUTE)
    user_tok, app_tok = limiter.seen[1]
    assert user_tok.limit == q.DEFAULT_TOKENS_PER_MINUTE_PER_USER
    assert app_tok.limit == q.DEFAULT_TOKENS_PER_MINUTE
    assert settings.reads == 1, "cached"


async def test_a_stopped_settings_store_holds_nothing_up(monkeypatch) -> None:
    monkeypatch.setattr(q, "SETTINGS_TTL_S", 0.0)  # every copy is stale at once
    monkeypatch.setattr(q, "FIRST_READ_DEADLINE_S", 0.05)
    limiter, settings = Limiter(), Settings()
    quotas = q.Quotas(limiter, settings)  # type: ignore[arg-type]
    await quotas.send("a1", "alice")  # reads and caches limit 7
    settings.hang = True
    started = time.monotonic()
    for _ in range(20):
        await quotas.send("a1", "alice")
    assert time.monotonic() - started < 0.5, "the stale copy served while refreshing"
    assert all(lims[0].limit == 7 for lims in limiter.seen)
    await asyncio.sleep(0.01)  # let the refresh task start
    assert settings.reads == 2, "one refresh in flight at a time"
    # An app never read before waits only the first-read deadline, then gets the defaults.
    started = time.monotonic()
    await quotas.send("a2", "bob")
    assert time.monotonic() - started < 0.5
    assert limiter.seen[-1][0].limit == q.DEFAULT_MESSAGES_PER_MINUTE_PER_USER
    for task in list(quotas._tasks):
        task.cancel()
