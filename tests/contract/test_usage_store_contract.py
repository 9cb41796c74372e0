"""The UsageStore contract, over every adapter: idempotent counts per app and day, peaks."""

from __future__ import annotations

from chatcluster.ports.usage import (
    ACTIVE_USERS,
    MESSAGES_SENT,
    TOKENS_ISSUED,
    WEBHOOK_FAILURES,
    DailyUsage,
    UsageKey,
)
from tests.contract.conftest import Backend

DAY1, DAY2, DAY3 = "2026-03-01", "2026-03-02", "2026-03-03"


async def test_counts_are_idempotent_per_app_and_day(usage_store_backend: Backend) -> None:
    store = await usage_store_backend.open()
    keys = [UsageKey("app_1", DAY1, MESSAGES_SENT, "m1"),
            UsageKey("app_1", DAY1, MESSAGES_SENT, "m2"),
            UsageKey("app_1", DAY1, ACTIVE_USERS, "alice"),
            UsageKey("app_1", DAY1, ACTIVE_USERS, "alice"),  # same batch, same key: once
            UsageKey("app_1", DAY2, MESSAGES_SENT, "m3"),
            UsageKey("app_2", DAY1, MESSAGES_SENT, "m4")]
    new = await store.record(keys)
    assert len(new) == 5
    # A replay (another process, same keys) counts nothing again.
    other = await usage_store_backend.open()
    assert await other.record(keys[:3]) == []
    assert await other.record([UsageKey("app_1", DAY2, TOKENS_ISSUED, "s1"), keys[0]]) == [
        UsageKey("app_1", DAY2, TOKENS_ISSUED, "s1")]
    assert await store.daily("app_1", DAY1, DAY3) == [
        DailyUsage(day=DAY1, messages_sent=2, active_users=1),
        DailyUsage(day=DAY2, messages_sent=1, tokens_issued=1)]
    assert await store.daily("app_1", DAY2, DAY2) == [
        DailyUsage(day=DAY2, messages_sent=1, tokens_issued=1)]
    assert await store.daily("app_3", DAY1, DAY3) == []


async def test_peak_keeps_the_highest_sample(usage_store_backend: Backend) -> None:
    store = await usage_store_backend.open()
    await store.record_peak("app_1", DAY1, 3)
    await store.record_peak("app_1", DAY1, 7)
    await store.record_peak("app_1", DAY1, 5)
    await store.record_peak("app_1", DAY2, 1)
    await store.record([UsageKey("app_1", DAY2, WEBHOOK_FAILURES, "d1:1")])
    assert await (await usage_store_backend.open()).daily("app_1", DAY1, DAY2) == [
        DailyUsage(day=DAY1, peak_connections=7),
        DailyUsage(day=DAY2, peak_connections=1, webhook_failures=1)]
