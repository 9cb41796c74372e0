"""An app's users, their sessions, export and erasure (docs/moderation.md).

    GET  /api/v1/admin/apps/{app_id}/users?prefix&limit&cursor         viewer
    GET  /api/v1/admin/apps/{app_id}/users/{user_id}                   viewer
    GET  /api/v1/admin/apps/{app_id}/users/{user_id}/sessions          viewer
    POST /api/v1/admin/apps/{app_id}/users/{user_id}/sessions/revoke   moderator: all of them
    POST /api/v1/admin/apps/{app_id}/users/{user_id}/sessions/{session_id}/revoke  moderator
    GET  /api/v1/admin/apps/{app_id}/users/{user_id}/export            admin
    POST /api/v1/admin/apps/{app_id}/users/{user_id}/erase             admin
    DELETE /api/v1/admin/apps/{app_id}/users/{user_id}                 admin (the same erasure)

Revoking takes the logout path: ``Store.revoke_session`` plus a ``revoke`` envelope (sockets
close with 4001; replicas also poll revocations every second). Erasure tombstones the user's
messages through ``MessageRemoval`` (members get ``message.deleted``), revokes every session
and removes the display name and device data.
"""


import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from chatcluster.domain.errors import BadRequest, NotFound
from chatcluster.domain.ids import now_rfc3339
from chatcluster.domain.moderation import ban_active, flag_view
from chatcluster.gateway.admin.scope import require_app
from chatcluster.ports.fanout import Envelope, Fanout
from chatcluster.ports.moderation import ModerationStore, SessionInfo, UserRecord
from chatcluster.ports.store import Store
from chatcluster.removal import MessageRemoval

from .auth import ADMIN_ERRORS

log = logging.getLogger(__name__)

Authorize = Callable[[str], Any]
EXPORT_PAGE = 500
# An export holds at most this many messages (a larger one would be a job, not a request).
EXPORT_MAX_MESSAGES = 100_000
# PROTOCOL.md "Read your writes": an acknowledged message is in the Store within 1 s.
READ_YOUR_WRITES_S = 1.0


class AuditRecorder(Protocol):
    """``gateway.admin.auth.Auditor``."""

    def record(self, request: Request, actor: Any, action: str, *, target: str | None = ...,
               app_id: str | None = ..., outcome: str = ...,
               detail: dict[str, Any] | None = ...) -> Awaitable[None]: ...


class UserView(BaseModel):
    user_id: str = Field(description="the app's external id")
    display_name: str | None
    created_at: str
    banned: bool


class UserPage(BaseModel):
    users: list[UserView]
    next_cursor: str | None


class SessionView(BaseModel):
    id: str
    created_at: str
    revoked_at: str | None
    last_refresh_at: str | None = Field(description="the last refresh-token rotation")
    user_agent: str | None = Field(description="as sent to the token or refresh route")
    ip: str | None = Field(description="the caller of the token route: the app's backend, "
                                       "unless it forwards the device's")


class SessionList(BaseModel):
    sessions: list[SessionView]


class Revoked(BaseModel):
    revoked: int


class Erased(BaseModel):
    user_id: str
    messages_tombstoned: int
    sessions_revoked: int


def encode_cursor(user_id: str) -> str:
    return base64.urlsafe_b64encode(user_id.encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor: not a cursor from this list") from None


def session_view(s: SessionInfo) -> dict[str, Any]:
    return {"id": s.id, "created_at": s.created_at, "revoked_at": s.revoked_at,
            "last_refresh_at": s.last_refresh_at, "user_agent": s.user_agent, "ip": s.ip}


async def revoke_sessions(store: Store, fanout: Fanout, sessions: list[SessionInfo]) -> int:
    """The logout path for each live session: revoked in the Store, then announced."""
    count = 0
    for s in sessions:
        if s.revoked_at is not None:
            continue
        await store.revoke_session(s.id, now_rfc3339())
        count += 1
        try:
            await fanout.publish(Envelope(kind="revoke", origin="gateway", session_id=s.id))
        except Exception:  # replicas also poll revocations every second
            log.exception("revoke fan-out failed")
    return count


def build_router(*, authorize: Authorize, store: Store, moderation: ModerationStore,
                 fanout: Fanout, removal: MessageRemoval,
                 auditor: AuditRecorder) -> APIRouter:
    router = APIRouter(prefix="/api/v1/admin/apps/{app_id}/users", tags=["admin: users"],
                       responses=ADMIN_ERRORS)
    viewer = Depends(authorize("viewer"))
    moderator = Depends(authorize("moderator"))
    admin_role = Depends(authorize("admin"))

    async def _app(app_id: str, me: Any) -> None:
        await require_app(store, me, app_id)

    async def _user(app_id: str, user_id: str, me: Any) -> UserRecord:
        await _app(app_id, me)
        found = await moderation.get_user(app_id, user_id)
        if found is None:
            raise NotFound("no such user")
        return found

    async def _view(u: UserRecord) -> dict[str, Any]:
        ban = await moderation.get_ban(u.app_id, u.user_id)
        return {"user_id": u.user_id, "display_name": u.display_name,
                "created_at": u.created_at, "banned": ban_active(ban, now_rfc3339())}

    @router.get("", response_model=UserPage,
                summary="The app's users by external id; prefix search on id or display name")
    async def list_users(
            app_id: str, me: Annotated[Any, viewer],
            prefix: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
            limit: Annotated[int, Query(ge=1, le=200)] = 50,
            cursor: Annotated[str | None, Query(max_length=400)] = None) -> Any:
        await _app(app_id, me)
        after = decode_cursor(cursor) if cursor else None
        found = await moderation.list_users(app_id, prefix, after, limit + 1)
        page = found[:limit]
        return {"users": [await _view(u) for u in page],
                "next_cursor": encode_cursor(page[-1].user_id)
                if len(found) > limit and page else None}

    @router.get("/{user_id}", response_model=UserView, summary="One user")
    async def get_user(app_id: str, user_id: str, me: Annotated[Any, viewer]) -> Any:
        return await _view(await _user(app_id, user_id, me))

    @router.get("/{user_id}/sessions", response_model=SessionList,
                summary="The user's sessions (signed-in devices), newest first")
    async def list_sessions(app_id: str, user_id: str, me: Annotated[Any, viewer]) -> Any:
        await _user(app_id, user_id, me)
        return {"sessions": [session_view(s)
                             for s in await moderation.user_sessions(app_id, user_id)]}

    @router.post("/{user_id}/sessions/revoke", response_model=Revoked,
                 summary="Revoke every session of the user: tokens stop working, sockets "
                         "close with 4001 within 2 s")
    async def revoke_all(app_id: str, user_id: str, request: Request,
                         me: Annotated[Any, moderator]) -> Any:
        await _user(app_id, user_id, me)
        count = await revoke_sessions(store, fanout,
                                      await moderation.user_sessions(app_id, user_id))
        await auditor.record(request, me, "user.sessions.revoke", target=user_id,
                             app_id=app_id, detail={"revoked": count})
        return {"revoked": count}

    @router.post("/{user_id}/sessions/{session_id}/revoke", status_code=204,
                 summary="Revoke one session: its sockets close with 4001 within 2 s")
    async def revoke_one(app_id: str, user_id: str, session_id: str, request: Request,
                         me: Annotated[Any, moderator]) -> Response:
        await _user(app_id, user_id, me)
        session = await store.get_session(session_id)
        if session is None or session.app_id != app_id or session.user_id != user_id:
            raise NotFound("no such session")
        sessions = [s for s in await moderation.user_sessions(app_id, user_id)
                    if s.id == session_id]
        await revoke_sessions(store, fanout, sessions)
        await auditor.record(request, me, "user.session.revoke", target=session_id,
                             app_id=app_id, detail={"user_id": user_id})
        return Response(status_code=204)

    @router.get("/{user_id}/export",
                summary="Everything kept about the user, as JSON: profile, sessions, "
                        "conversations, messages they sent, receipts, flags they made")
    async def export_user(app_id: str, user_id: str, request: Request,
                          me: Annotated[Any, admin_role]) -> Any:
        user = await _user(app_id, user_id, me)
        conversations: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            states, cursor = await store.list_conversations(app_id, user_id, 100, cursor)
            conversations += [{"id": c.id, "type": c.type, "title": c.title,
                               "members": c.members, "owner": c.owner, "admins": c.admins,
                               "created_at": c.created_at} for c in states]
            if cursor is None or not states:
                break
        messages: list[Any] = []
        after: str | None = None
        while len(messages) < EXPORT_MAX_MESSAGES:
            page = await moderation.messages_sent_by(app_id, user_id, after, EXPORT_PAGE)
            messages += [s.message for s in page]
            if len(page) < EXPORT_PAGE:
                break
            after = page[-1].message.id
        ban = await moderation.get_ban(app_id, user_id)
        await auditor.record(request, me, "user.export", target=user_id, app_id=app_id,
                             detail={"messages": len(messages)})
        return {
            "app_id": app_id, "exported_at": now_rfc3339(),
            "profile": {"user_id": user.user_id, "display_name": user.display_name,
                        "created_at": user.created_at},
            "ban": None if ban is None else {"at": ban.at, "reason": ban.reason,
                                             "expires_at": ban.expires_at},
            "sessions": [session_view(s)
                         for s in await moderation.user_sessions(app_id, user_id)],
            "conversations": conversations,
            "messages": [_message_json(m) for m in messages],
            "receipts": [{"conversation_id": r.conversation_id, "kind": r.kind, "seq": r.seq}
                         for r in await moderation.receipts_of(app_id, user_id)],
            "flags": [flag_view(f) for f in await moderation.flags_by(app_id, user_id)],
        }

    async def erase(app_id: str, user_id: str, request: Request, me: Any) -> dict[str, Any]:
        await _user(app_id, user_id, me)
        # Sessions first: the user cannot write new messages while their old ones go.
        revoked = await revoke_sessions(store, fanout,
                                        await moderation.user_sessions(app_id, user_id))
        actor = f"admin:{getattr(me, 'admin_id', 'root')}"
        tombstoned = 0
        removed: set[str] = set()
        for sweep in range(2):
            if sweep:  # a message answered ok just before the revocation is stored within 1 s
                await asyncio.sleep(READ_YOUR_WRITES_S)
            after: str | None = None
            while True:
                page = await moderation.messages_sent_by(app_id, user_id, after, EXPORT_PAGE)
                for state in page:
                    if not state.message.deleted and state.message.id not in removed:
                        await removal.remove(state, actor)
                        removed.add(state.message.id)
                        tombstoned += 1
                if len(page) < EXPORT_PAGE:
                    break
                after = page[-1].message.id
        await moderation.erase_profile(app_id, user_id)
        await auditor.record(request, me, "user.erase", target=user_id, app_id=app_id,
                             detail={"messages_tombstoned": tombstoned,
                                     "sessions_revoked": revoked})
        return {"user_id": user_id, "messages_tombstoned": tombstoned,
                "sessions_revoked": revoked}

    @router.post("/{user_id}/erase", response_model=Erased,
                 summary="Erase the user: messages become tombstones, display name and device "
                         "data removed, sessions revoked (sockets close with 4001)")
    async def erase_user(app_id: str, user_id: str, request: Request,
                         me: Annotated[Any, admin_role]) -> Any:
        return await erase(app_id, user_id, request, me)

    @router.delete("/{user_id}", response_model=Erased, summary="Same as POST .../erase")
    async def delete_user(app_id: str, user_id: str, request: Request,
                          me: Annotated[Any, admin_role]) -> Any:
        return await erase(app_id, user_id, request, me)

    return router


def _message_json(m: Any) -> dict[str, Any]:
    return {"id": m.id, "conversation_id": m.conversation_id, "seq": m.seq, "text": m.text,
            "client_msg_id": m.client_msg_id, "created_at": m.created_at,
            "edited_at": m.edited_at, "deleted": m.deleted, "reply_to": m.reply_to,
            "attachments": m.attachments}
