"""RateLimiter on Redis: one counter per (quota, window), checked and counted in one script.

Keys: ``{prefix}rl:<quota key>:<window index>`` (string, the hit count), expiring when its
window ends (plus a second of slack for clock skew between replicas).
"""

from __future__ import annotations

import math

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from chatcluster.domain.errors import Unavailable
from chatcluster.ports.ratelimit import Limit, window_end

# KEYS: counters; ARGV: limit_1, ttl_ms_1, limit_2, ttl_ms_2, ...
# Returns 0 when every counter was below its limit (each is then incremented), else the
# 1-based index of the first counter that is full (nothing is incremented).
_ACQUIRE = """
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[2 * i - 1]) then return i end
end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[2 * i]) end
end
return 0
"""


class RedisRateLimiter:
    def __init__(self, url: str, prefix: str = "chat:", max_connections: int = 64) -> None:
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(url, max_connections=max_connections))
        self.prefix = prefix
        self._acquire = self.redis.register_script(_ACQUIRE)

    async def acquire(self, limits: list[Limit], now: float) -> float:
        if not limits:
            return 0.0
        keys, args = [], []
        for lim in limits:
            keys.append(f"{self.prefix}rl:{lim.key}:{int(now // lim.window_s)}")
            args += [lim.limit, math.ceil((window_end(lim, now) - now + 1.0) * 1000)]
        try:
            refused = int(await self._acquire(keys=keys, args=args))
        except RedisError as exc:
            raise Unavailable(f"rate limiter unreachable: {exc}") from exc
        return 0.0 if refused == 0 else max(window_end(limits[refused - 1], now) - now, 0.001)

    async def close(self) -> None:
        await self.redis.aclose()
