"""``GET /api/v1/admin/apps/{app_id}/usage?from=&to=``: an app's usage per UTC day.

Counts come from the consumers (group "usage", the webhook dispatcher) and the gateway (tokens)
through the UsageStore; every day of the range is listed, zeros included.
"""


import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from chatcluster.domain.errors import BadRequest
from chatcluster.gateway.admin.scope import require_app
from chatcluster.ports.store import Store
from chatcluster.ports.usage import TOKENS_ISSUED, DailyUsage, UsageKey, UsageStore

log = logging.getLogger(__name__)

Authorize = Callable[[str], Any]
DEFAULT_DAYS = 30
MAX_DAYS = 366


class DayUsage(BaseModel):
    day: str = Field(description="UTC day, YYYY-MM-DD")
    messages_sent: int
    active_users: int = Field(description="distinct senders of the day")
    peak_connections: int = Field(description="highest sampled concurrent connections")
    tokens_issued: int = Field(description="SDK sign-ins and refreshes")
    webhook_deliveries: int = Field(description="deliveries the receiver accepted (2xx)")
    webhook_failures: int = Field(description="failed attempts (each retry counts)")


class UsageTotals(BaseModel):
    messages_sent: int
    peak_connections: int = Field(description="the highest day's peak")
    tokens_issued: int
    webhook_deliveries: int
    webhook_failures: int


class UsageReport(BaseModel):
    app_id: str
    from_day: str = Field(alias="from", description="first day, YYYY-MM-DD")
    to: str = Field(description="last day, inclusive")
    days: list[DayUsage]
    totals: UsageTotals


def _day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name}: expected a day, YYYY-MM-DD") from None


def report(app_id: str, first: date, last: date, found: list[DailyUsage]) -> dict[str, Any]:
    by_day = {d.day: d for d in found}
    days: list[DailyUsage] = []
    for i in range((last - first).days + 1):
        day = (first + timedelta(days=i)).isoformat()
        days.append(by_day.get(day) or DailyUsage(day=day))
    totals = {
        "messages_sent": sum(d.messages_sent for d in days),
        "tokens_issued": sum(d.tokens_issued for d in days),
        "webhook_deliveries": sum(d.webhook_deliveries for d in days),
        "webhook_failures": sum(d.webhook_failures for d in days),
        "peak_connections": max((d.peak_connections for d in days), default=0)}
    return {"app_id": app_id, "from": first.isoformat(), "to": last.isoformat(),
            "days": [msgspec.to_builtins(d) for d in days], "totals": totals}


def build_router(*, authorize: Authorize, store: UsageStore, apps: Store,
                 today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> APIRouter:
    router = APIRouter(prefix="/api/v1/admin/apps/{app_id}", tags=["admin: usage"])
    viewer = Depends(authorize("viewer"))

    @router.get("/usage", response_model=UsageReport,
                summary="Usage per UTC day: messages, active users, peak connections, tokens, "
                        "webhook deliveries and failures")
    async def usage(app_id: str, me: Annotated[Any, viewer],
                    from_: Annotated[str | None, Query(
                        alias="from", max_length=10,
                        description=f"first day, YYYY-MM-DD (default: {DEFAULT_DAYS - 1} days "
                                    "before to)")] = None,
                    to: Annotated[str | None, Query(
                        max_length=10, description="last day, inclusive (default: today, "
                                                   "UTC)")] = None) -> Any:
        await require_app(apps, me, app_id)
        last = _day(to, "to", today())
        first = _day(from_, "from", last - timedelta(days=DEFAULT_DAYS - 1))
        if first > last:
            raise BadRequest("from: must not be after to")
        if (last - first).days + 1 > MAX_DAYS:
            raise BadRequest(f"from, to: at most {MAX_DAYS} days at a time")
        found = await store.daily(app_id, first.isoformat(), last.isoformat())
        return report(app_id, first, last, found)

    return router


class TokenCounter:
    """The gateway's ``on_token_issued``: counts token pairs in the UsageStore in the
    background, one write per ``FLUSH_S`` for all of them, so the token route never waits for
    it (a crash may lose the counts of the last ``FLUSH_S``; usage is for reporting, not
    billing-grade). Bounded: past ``MAX_PENDING`` counts waiting, more are dropped and logged
    rather than queued without bound (a store that stopped answering)."""

    FLUSH_S = 0.25
    MAX_PENDING = 10_000

    def __init__(self, store: UsageStore) -> None:
        self.store = store
        self._pending: list[UsageKey] = []
        self._flusher: asyncio.Task[None] | None = None

    def __call__(self, app_id: str, key: str) -> None:
        if len(self._pending) >= self.MAX_PENDING:
            log.warning("token usage dropped: too many counts waiting")
            return
        self._pending.append(UsageKey(app_id, datetime.now(UTC).date().isoformat(),
                                      TOKENS_ISSUED, key))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.FLUSH_S)
        self._flusher = None  # counts from now on wait for the next flush
        await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.store.record(batch)
        except Exception:
            log.warning("token usage not recorded", exc_info=True,
                        extra={"fields": {"counts": len(batch)}})

    async def drain(self) -> None:
        """At shutdown: write what is waiting."""
        if self._flusher is not None:
            await self._flusher
        await self._flush()
