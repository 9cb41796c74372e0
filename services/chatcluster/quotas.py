"""Per-app and per-user quotas of the token route and of ``message.send``.

Each app's settings (``PUT /api/v1/admin/apps/{id}/settings``) may set its own limits; unset
ones take the platform defaults below. Limits are per minute, in fixed one-minute windows
shared by every replica (ports.ratelimit). Settings are cached for ``SETTINGS_TTL_S``, so a
change applies within that long. A limiter or settings store that cannot be reached fails
open (logged): a quota is not worth refusing service for.
"""

from __future__ import annotations

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


class Quotas:
    def __init__(self, limiter: RateLimiter, settings: AdminStore | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.limiter = limiter
        self.settings = settings
        self.clock = clock
        self._cache: dict[str, tuple[float, AppSettings | None]] = {}

    async def _app_settings(self, app_id: str) -> AppSettings | None:
        if self.settings is None:
            return None
        now = time.monotonic()
        hit = self._cache.get(app_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            found = await self.settings.get_app_settings(app_id)
        except Unavailable:
            return hit[1] if hit is not None else None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[app_id] = (now + SETTINGS_TTL_S, found)
        return found

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
