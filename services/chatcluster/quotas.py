"""Per-app and per-user quotas of the token route and of ``message.send``.

Each app's settings (``PUT /api/v1/admin/apps/{id}/settings``) may set its own limits; unset
ones take the platform defaults below. Limits are per minute, in fixed one-minute windows
shared by every replica (ports.ratelimit). Settings are cached for ``SETTINGS_TTL_S`` and then
refreshed in the background while the old copy keeps serving, so a change applies within
seconds and a stopped settings store never holds up a request. A limiter that cannot be
reached fails open (logged): a quota is not worth refusing service for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from chatcluster.domain.errors import Unavailable
from chatcluster.ports.admin import AdminStore, AppSettings
from chatcluster.ports.ratelimit import Limit, RateLimiter

log = logging.getLogger(__name__)

DEFAULT_TOKENS_PER_MINUTE = 6_000  # per app
DEFAULT_TOKENS_PER_MINUTE_PER_USER = 60
DEFAULT_MESSAGES_PER_MINUTE = 600_000  # per app
DEFAULT_MESSAGES_PER_MINUTE_PER_USER = 1_200
WINDOW_S = 60.0
SETTINGS_TTL_S = 5.0
FIRST_READ_DEADLINE_S = 0.5
REFRESH_DEADLINE_S = 5.0


class Quotas:
    def __init__(self, limiter: RateLimiter, settings: AdminStore | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.limiter = limiter
        self.settings = settings
        self.clock = clock
        self._cache: dict[str, tuple[float, AppSettings | None]] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _app_settings(self, app_id: str) -> AppSettings | None:
        """Cached settings; an expired copy is served while one task refreshes it, so a slow
        or stopped settings store never holds up a send or a sign-in."""
        if self.settings is None:
            return None
        hit = self._cache.get(app_id)
        if hit is not None:
            if hit[0] <= time.monotonic() and app_id not in self._refreshing:
                self._refreshing.add(app_id)
                task = asyncio.create_task(self._refresh(app_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return hit[1]
        try:  # never read yet: wait a little, else the defaults until a read succeeds
            found = await asyncio.wait_for(self.settings.get_app_settings(app_id),
                                           FIRST_READ_DEADLINE_S)
        except (TimeoutError, Unavailable):
            return None
        self._keep(app_id, found)
        return found

    async def _refresh(self, app_id: str) -> None:
        assert self.settings is not None
        try:
            self._keep(app_id, await asyncio.wait_for(
                self.settings.get_app_settings(app_id), REFRESH_DEADLINE_S))
        except (TimeoutError, Unavailable) as exc:
            log.warning("app settings unreadable; keeping the last copy",
                        extra={"fields": {"app": app_id, "error": repr(exc)}})
        finally:
            self._refreshing.discard(app_id)

    def _keep(self, app_id: str, found: AppSettings | None) -> None:
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[app_id] = (time.monotonic() + SETTINGS_TTL_S, found)

    async def _acquire(self, limits: list[Limit]) -> float:
        try:
            return await self.limiter.acquire(limits, self.clock())
        except Unavailable as exc:
            log.warning("rate limiter unavailable; allowing", extra={"fields": {
                "error": str(exc)}})
            return 0.0

    async def token(self, app_id: str, user_id: str) -> float:
        """0.0, or the seconds to wait before this app or user may get another token."""
        s = await self._app_settings(app_id)
        per_app = (s and s.token_requests_per_minute) or DEFAULT_TOKENS_PER_MINUTE
        per_user = ((s and s.token_requests_per_minute_per_user)
                    or DEFAULT_TOKENS_PER_MINUTE_PER_USER)
        return await self._acquire([Limit(f"tok:user:{app_id}:{user_id}", per_user, WINDOW_S),
                                    Limit(f"tok:app:{app_id}", per_app, WINDOW_S)])

    async def send(self, app_id: str, user_id: str) -> float:
        """0.0, or the seconds to wait before this app or user may send again."""
        s = await self._app_settings(app_id)
        per_app = (s and s.messages_per_minute) or DEFAULT_MESSAGES_PER_MINUTE
        per_user = ((s and s.messages_per_minute_per_user)
                    or DEFAULT_MESSAGES_PER_MINUTE_PER_USER)
        return await self._acquire([Limit(f"send:user:{app_id}:{user_id}", per_user, WINDOW_S),
                                    Limit(f"send:app:{app_id}", per_app, WINDOW_S)])
