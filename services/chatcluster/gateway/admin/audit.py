"""``GET /api/v1/admin/audit``: the audit log, newest first, filtered, a page at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from chatcluster.domain.errors import Forbidden
from chatcluster.ports.admin import (
    AdminStore,
    AuditQuery,
    decode_audit_cursor,
    encode_audit_cursor,
)

from .auth import ADMIN_ERRORS, AdminAuth, AdminPrincipal


class AuditEntryView(BaseModel):
    id: str
    at: str = Field(description="RFC 3339 UTC")
    actor: str = Field(description="admin id, 'root' for the root token, 'anonymous' for a "
                                   "failed login of an unknown email")
    action: str = Field(description="e.g. app.create, app.disable, admin.login, access.denied")
    target: str | None
    app_id: str | None
    ip: str | None
    user_agent: str | None
    outcome: str = Field(description="ok, failed, denied or locked")
    detail: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntryView]
    next_cursor: str | None


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_router(*, auth: AdminAuth, store: AdminStore) -> APIRouter:
    router = APIRouter(prefix="/api/v1/admin", tags=["admin: audit"],
                       responses=ADMIN_ERRORS)
    admin_role = Depends(auth.require_role("admin"))

    @router.get("/audit", response_model=AuditPage,
                summary="Who did what, to what, when and from where; newest first")
    async def audit_log(
        me: AdminPrincipal = admin_role,
        actor: Annotated[str | None, Query(max_length=200)] = None,
        action: Annotated[str | None, Query(max_length=200)] = None,
        app_id: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[datetime | None, Query(description="inclusive, RFC 3339")] = None,
        until: Annotated[datetime | None, Query(description="exclusive, RFC 3339")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
    ) -> Any:
        if me.app_ids:
            raise Forbidden("the audit log is for admins of every app")
        query = AuditQuery(actor=actor, action=action, app_id=app_id, since=_rfc3339(since),
                           until=_rfc3339(until),
                           before=decode_audit_cursor(cursor) if cursor else None)
        entries = await store.query_audit(query, limit + 1)
        page = entries[:limit]
        nxt = (encode_audit_cursor(page[-1].at, page[-1].id)
               if len(entries) > limit and page else None)
        return {"entries": [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action,
                             "target": e.target, "app_id": e.app_id, "ip": e.ip,
                             "user_agent": e.user_agent, "outcome": e.outcome,
                             "detail": e.detail} for e in page],
                "next_cursor": nxt}

    return router
