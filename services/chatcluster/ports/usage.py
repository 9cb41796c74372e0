"""UsageStore: per app and UTC day, what the platform did for that tenant.

Counted metrics are sets of keys, so counting is idempotent: recording a key twice (a replayed
bus record, a retried write) counts it once.

    messages_sent         key: message id
    active_users          key: sender's external id (distinct senders of the day)
    tokens_issued         key: session id / refresh jti (the gateway records it directly)
    webhook_deliveries    key: delivery id (delivered)
    webhook_failures      key: delivery id + attempt number (each failed attempt)

``peak_connections`` is a maximum (``record_peak`` keeps the highest sample of the day).

Guarantees: durable on return; ``record`` and ``record_peak`` are idempotent and commute, so
any replay or reordering of the same inputs gives the same totals.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

MESSAGES_SENT = "messages_sent"
ACTIVE_USERS = "active_users"
TOKENS_ISSUED = "tokens_issued"
WEBHOOK_DELIVERIES = "webhook_deliveries"
WEBHOOK_FAILURES = "webhook_failures"
COUNTED = (MESSAGES_SENT, ACTIVE_USERS, TOKENS_ISSUED, WEBHOOK_DELIVERIES, WEBHOOK_FAILURES)
PEAK_CONNECTIONS = "peak_connections"


class UsageKey(msgspec.Struct, frozen=True):
    app_id: str
    day: str  # YYYY-MM-DD, UTC
    metric: str  # one of COUNTED
    key: str


class DailyUsage(msgspec.Struct, kw_only=True):
    day: str
    messages_sent: int = 0
    active_users: int = 0
    peak_connections: int = 0
    tokens_issued: int = 0
    webhook_deliveries: int = 0
    webhook_failures: int = 0


def day_of(rfc3339: str) -> str:
    """The UTC day of an RFC 3339 UTC time (``2026-11-26T01:48:33.123Z`` -> ``2026-11-26``)."""
    return rfc3339[:10]


class UsageStore(Protocol):
    async def record(self, keys: list[UsageKey]) -> list[UsageKey]:
        """Add the keys; returns those that were new (each counted exactly once)."""
        ...

    async def record_peak(self, app_id: str, day: str, connections: int) -> None:
        """Raise the day's peak concurrent connections to ``connections`` if higher."""
        ...

    async def daily(self, app_id: str, first_day: str, last_day: str) -> list[DailyUsage]:
        """Every day from ``first_day`` to ``last_day`` (inclusive) that has any usage,
        ascending."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
