"""RateLimiter: per-app and per-user quotas shared by every gateway and socket replica.

Fixed windows: a limit of ``n`` per ``window_s`` counts hits in the window
``[k * window_s, (k + 1) * window_s)`` that holds ``now``; a window starts empty. A burst of up
to ``2n`` can therefore straddle a window boundary; within one window never more than ``n``.

Guarantees:
- ``acquire`` is all or nothing over its limits, atomically across processes: either every
  limit had room and each counted one hit (returns 0.0), or none counted anything and the
  return value is the seconds until the window of a refused limit ends (> 0).
- Counters need no durability: losing them (a Redis flush, a restart) only grants a fresh
  window. A limiter that cannot be reached raises ``Unavailable``; callers decide whether to
  fail open (they do: a quota is not worth refusing service for).
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Limit(msgspec.Struct, frozen=True):
    key: str  # e.g. "send:user:<app>:<user>"; unique per quota
    limit: int  # hits allowed per window (>= 1)
    window_s: float


def window_end(limit: Limit, now: float) -> float:
    return (now // limit.window_s + 1) * limit.window_s


class RateLimiter(Protocol):
    async def acquire(self, limits: list[Limit], now: float) -> float: ...

    async def close(self) -> None: ...
