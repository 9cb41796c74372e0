"""RateLimiter contract: fixed windows, all or nothing, shared between instances."""

from __future__ import annotations

import asyncio

from chatcluster.ports.ratelimit import Limit, RateLimiter

T0 = 1_800_000_000.0  # a window boundary for 60 s and 10 s windows


async def test_a_limit_admits_n_per_window_then_says_when_it_resets(ratelimit_backend) -> None:
    rl: RateLimiter = await ratelimit_backend.open()
    lim = Limit("send:user:app:alice", 3, 60.0)
    assert [await rl.acquire([lim], T0 + i) for i in range(3)] == [0.0, 0.0, 0.0]
    wait = await rl.acquire([lim], T0 + 15)
    assert abs(wait - 45.0) < 1e-6, "refused until the window ends"
    assert await rl.acquire([lim], T0 + 60) == 0.0, "a new window starts empty"
    other = Limit("send:user:app:bob", 3, 60.0)
    assert await rl.acquire([other], T0 + 15) == 0.0, "quotas are independent"


async def test_instances_share_the_counters(ratelimit_backend) -> None:
    one: RateLimiter = await ratelimit_backend.open()
    two: RateLimiter = await ratelimit_backend.open()
    lim = Limit("tok:app:a1", 4, 10.0)
    results = await asyncio.gather(*(r.acquire([lim], T0 + 1) for r in [one, two] * 5))
    assert sorted(results).count(0.0) == 4, results
    assert all(abs(w - 9.0) < 1e-6 for w in results if w), results


async def test_acquire_is_all_or_nothing(ratelimit_backend) -> None:
    rl: RateLimiter = await ratelimit_backend.open()
    user = Limit("send:user:a1:alice", 10, 60.0)
    app = Limit("send:app:a1", 2, 60.0)
    assert await rl.acquire([user, app], T0) == 0.0
    assert await rl.acquire([user, app], T0 + 1) == 0.0
    assert await rl.acquire([user, app], T0 + 2) > 0, "the app's quota is spent"
    # The refused attempts took nothing from alice's own quota: 2 used, 8 left.
    alone = [await rl.acquire([user], T0 + 3) for _ in range(9)]
    assert alone.count(0.0) == 8 and alone[-1] > 0
