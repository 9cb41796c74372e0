"""What the token route reads on every sign-in, kept in the gateway's memory.

A sign-in needs the app (its secret digest and whether it is disabled), the user's ban, and
the live socket URLs. Reading all three from the store on every request cost more than the
rest of the route together (bench/token_route.py), so:

- **Apps** found are kept ``APP_TTL_S``. Only the success path trusts the copy: a secret that
  does not match it, or an unknown app, is checked against a fresh read (so a secret rotated
  on another gateway works at once). A change made through this gateway's admin routes drops
  the copy at once (``forget_app``); one made through another gateway replica shows here
  within ``APP_TTL_S`` (disabling an app also revokes its sessions on every replica at once).
- **Bans** are kept until the moderation store's version changes. The version is read at most
  every ``VERSION_POLL_S``, by the request that finds it due; a ban or unban through this
  gateway drops every copy at once (``forget_moderation``). A ban's expiry is evaluated at
  each sign-in, so an expired ban never needs a refresh.
- **Socket URLs** are kept ``URLS_TTL_S``: replicas heartbeat every second, so the list is at
  most that old anyway.

The stated bound (docs/admin.md): a ban, unban, disable or enable made on another gateway
replica holds for sign-ins everywhere within about a second.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from chatcluster.domain.model import App
from chatcluster.domain.moderation import Ban, ban_active
from chatcluster.ports.moderation import ModerationStore
from chatcluster.ports.store import Store

APP_TTL_S = 1.0
VERSION_POLL_S = 1.0
URLS_TTL_S = 0.5
MAX_CACHED = 100_000


class SignInCache:
    def __init__(self, store: Store, moderation: ModerationStore | None,
                 socket_urls: Callable[[], Awaitable[list[str]]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.moderation = moderation
        self._socket_urls = socket_urls
        self._clock = clock
        self._apps: dict[str, tuple[float, App]] = {}
        self._bans: dict[tuple[str, str], Ban | None] = {}
        self._version: int | None = None
        self._version_checked = float("-inf")
        # Bumped whenever cached bans may be stale: a read that started before is not kept.
        self._generation = 0
        self._urls: tuple[float, list[str]] | None = None

    # apps ------------------------------------------------------------------------------------
    async def app(self, app_id: str, fresh: bool = False) -> App | None:
        """The app, from a copy at most ``APP_TTL_S`` old unless ``fresh``."""
        now = self._clock()
        hit = None if fresh else self._apps.get(app_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self.store.get_app(app_id)
        if found is None:
            self._apps.pop(app_id, None)
        else:
            if len(self._apps) >= MAX_CACHED:
                self._apps.clear()
            self._apps[app_id] = (now + APP_TTL_S, found)
        return found

    def forget_app(self, app_id: str) -> None:
        self._apps.pop(app_id, None)

    # bans ------------------------------------------------------------------------------------
    async def banned(self, app_id: str, user_id: str, now_rfc3339: str) -> bool:
        if self.moderation is None:
            return False
        await self._check_version()
        key = (app_id, user_id)
        if key in self._bans:
            return ban_active(self._bans[key], now_rfc3339)
        generation = self._generation
        ban = await self.moderation.get_ban(app_id, user_id)
        if generation == self._generation:
            if len(self._bans) >= MAX_CACHED:
                self._bans.clear()
            self._bans[key] = ban
        return ban_active(ban, now_rfc3339)

    async def _check_version(self) -> None:
        assert self.moderation is not None
        now = self._clock()
        if now - self._version_checked < VERSION_POLL_S:
            return
        self._version_checked = now  # one reader per period, however many requests wait
        try:
            version = await self.moderation.version()
        except BaseException:
            self._version_checked = float("-inf")  # try again on the next request
            self.forget_moderation()
            raise
        if version != self._version:
            self._version = version
            self.forget_moderation()

    def forget_moderation(self) -> None:
        self._generation += 1
        self._bans.clear()

    # socket URLs -----------------------------------------------------------------------------
    async def socket_urls(self) -> list[str]:
        now = self._clock()
        if self._urls is not None and self._urls[0] > now:
            return self._urls[1]
        urls = await self._socket_urls()
        self._urls = (now + URLS_TTL_S, urls)
        return urls
