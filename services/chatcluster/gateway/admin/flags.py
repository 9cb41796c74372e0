"""The flag queue of an app (docs/moderation.md "Flags"): messages members reported with the
socket's ``message.flag``. Reads need ``viewer``, resolving ``moderator``; resolving is
audited.

    GET  /api/v1/admin/apps/{app_id}/flags?status=open|dismissed|removed|all&limit=&cursor=
    POST /api/v1/admin/apps/{app_id}/flags/{flag_id}/resolve   {"action": "dismiss"|"remove"}

A decision is about the message, not one report: resolving closes every open flag of the
flagged message. ``remove`` deletes the message as a moderator delete does (members receive
``message.deleted``); ``dismiss`` keeps it.
"""
# No "from __future__ import annotations": FastAPI must see the Depends objects of the route
# signatures, which are local to build_router.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from chatcluster.domain.errors import BadRequest, NotFound
from chatcluster.domain.ids import now_rfc3339
from chatcluster.domain.moderation import FlagStatus, flag_view
from chatcluster.gateway.admin.scope import require_app
from chatcluster.ports.moderation import ModerationStore
from chatcluster.ports.sequencer import Sequencer
from chatcluster.ports.store import Store
from chatcluster.removal import MessageRemoval

from .auth import ADMIN_ERRORS
from .moderation import actor, find_message
from .users import AuditRecorder, Authorize


class FlagView(BaseModel):
    id: str
    message_id: str
    conversation_id: str
    sender_id: str
    flagged_by: str
    reason: Literal["spam", "harassment", "inappropriate", "other"]
    note: str | None
    created_at: str
    status: Literal["open", "dismissed", "removed"]
    resolved_by: str | None
    resolved_at: str | None


class FlagPage(BaseModel):
    flags: list[FlagView]
    next_cursor: str | None


class ResolveRequest(BaseModel):
    action: Literal["dismiss", "remove"]


class Resolved(BaseModel):
    flag: FlagView
    resolved: int  # open flags of the message this closed (0: already decided)


def _cursor(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    at, sep, flag_id = value.partition("|")
    if not sep or not at or not flag_id.startswith("flg_"):
        raise BadRequest("cursor: not a cursor this route returned")
    return at, flag_id


def build_router(*, authorize: Authorize, store: Store, moderation: ModerationStore,
                 sequencer: Sequencer, removal: MessageRemoval,
                 auditor: AuditRecorder) -> APIRouter:
    router = APIRouter(prefix="/api/v1/admin/apps/{app_id}/flags",
                       tags=["admin: moderation"], responses=ADMIN_ERRORS)
    viewer = Depends(authorize("viewer"))
    moderator = Depends(authorize("moderator"))

    @router.get("", response_model=FlagPage,
                summary="The flag queue, oldest first (default: the open flags)")
    async def list_flags(app_id: str, me: Annotated[Any, viewer],
                         status: Literal["open", "dismissed", "removed", "all"] = "open",
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         cursor: Annotated[str | None, Query(max_length=300)] = None) -> Any:
        await require_app(store, me, app_id)
        wanted: FlagStatus | None = None if status == "all" else status
        found = await moderation.list_flags(app_id, wanted, _cursor(cursor), limit + 1)
        page = found[:limit]
        last = page[-1] if len(found) > limit and page else None
        return {"flags": [flag_view(f) for f in page],
                "next_cursor": f"{last.created_at}|{last.id}" if last else None}

    @router.post("/{flag_id}/resolve", response_model=Resolved,
                 summary="Decide on the flagged message: every open flag of it is closed")
    async def resolve(app_id: str, flag_id: str, body: ResolveRequest, request: Request,
                      me: Annotated[Any, moderator]) -> Any:
        await require_app(store, me, app_id)
        flag = await moderation.get_flag(app_id, flag_id)
        if flag is None:
            raise NotFound("no such flag")
        status: FlagStatus = "removed" if body.action == "remove" else "dismissed"
        if body.action == "remove" and flag.status == "open":
            state = await find_message(store, sequencer, app_id, flag.message_id)
            await removal.remove(state, f"admin:{actor(me)}")
        closed = await moderation.resolve_flags(app_id, flag.message_id, status, actor(me),
                                                now_rfc3339())
        await auditor.record(request, me, f"flag.{body.action}", target=flag.message_id,
                             app_id=app_id, detail={"flag_id": flag_id, "closed": closed,
                                                    "conversation_id": flag.conversation_id})
        after = await moderation.get_flag(app_id, flag_id)
        assert after is not None  # flags are never deleted
        return {"flag": flag_view(after), "resolved": closed}

    return router
