"""The gateway's token counter: counts are batched into one UsageStore write per FLUSH_S,
bounded, and written at shutdown; a failing store never reaches the token route."""

from __future__ import annotations

import asyncio
from typing import cast

from chatcluster.gateway.admin.usage import TokenCounter
from chatcluster.ports.usage import TOKENS_ISSUED, UsageKey, UsageStore


class Usage:
    def __init__(self, fail: bool = False) -> None:
        self.writes: list[list[UsageKey]] = []
        self.fail = fail

    async def record(self, keys: list[UsageKey]) -> None:
        if self.fail:
            raise ConnectionError("usage store down")
        self.writes.append(keys)


async def test_counts_are_written_together_after_the_flush_period() -> None:
    usage = Usage()
    count = TokenCounter(cast(UsageStore, usage))
    count.FLUSH_S = 0.05
    for i in range(5):
        count("app", f"s{i}")
    assert usage.writes == [], "nothing on the route's path"
    await asyncio.sleep(0.15)
    assert len(usage.writes) == 1
    assert [(k.app_id, k.metric, k.key) for k in usage.writes[0]] == [
        ("app", TOKENS_ISSUED, f"s{i}") for i in range(5)]
    count("app", "s5")  # a later count gets its own flush
    await asyncio.sleep(0.15)
    assert [k.key for k in usage.writes[1]] == ["s5"]


async def test_drain_writes_what_waits_and_the_bound_drops_the_rest() -> None:
    usage = Usage()
    count = TokenCounter(cast(UsageStore, usage))
    count.MAX_PENDING = 3
    for i in range(5):
        count("app", f"s{i}")
    await count.drain()
    assert [k.key for k in usage.writes[0]] == ["s0", "s1", "s2"]


async def test_a_failing_store_is_logged_not_raised(caplog) -> None:
    count = TokenCounter(cast(UsageStore, Usage(fail=True)))
    count("app", "s0")
    await count.drain()
    assert "token usage not recorded" in caplog.text
