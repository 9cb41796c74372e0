"""Moderation of an app: bans, mutes, frozen conversations, moderator deletes
(docs/moderation.md). Reads need ``viewer``, every change ``moderator``, and every change is
audited.

    GET    /api/v1/admin/apps/{app_id}/bans
    PUT    /api/v1/admin/apps/{app_id}/users/{user_id}/ban           {"reason"?, "duration_s"?}
    DELETE /api/v1/admin/apps/{app_id}/users/{user_id}/ban
    GET    /api/v1/admin/apps/{app_id}/conversations/{cid}/moderation
    PUT    /api/v1/admin/apps/{app_id}/conversations/{cid}/mutes/{user_id}
    DELETE /api/v1/admin/apps/{app_id}/conversations/{cid}/mutes/{user_id}
    POST   /api/v1/admin/apps/{app_id}/conversations/{cid}/freeze    (and /unfreeze)
    DELETE /api/v1/admin/apps/{app_id}/messages/{message_id}

A change is written to the ModerationStore, then announced on the Fanout with a
``moderation`` envelope (replicas drop their cache; for a ban they close the user's sockets
with 4003). A ban or unban is also published on the bus (topic ``user.moderated``) for the
``user.banned`` / ``user.unbanned`` webhooks; if that fails the route answers 503 with the
change kept, and a retry publishes it. A moderator delete goes through ``MessageRemoval``: the
path of a member's delete.
"""


import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from chatcluster.domain.errors import NotFound, Unavailable
from chatcluster.domain.ids import new_id, now_rfc3339, rfc3339
from chatcluster.domain.model import ConversationState, MessageState
from chatcluster.domain.moderation import Ban, ban_active
from chatcluster.gateway.admin.scope import require_app
from chatcluster.ports import bus as topics
from chatcluster.ports.events import UserModerated
from chatcluster.ports.fanout import Envelope, Fanout
from chatcluster.ports.moderation import ModerationStore
from chatcluster.ports.sequencer import Sequencer
from chatcluster.ports.store import Store
from chatcluster.removal import MessageRemoval

from .auth import ADMIN_ERRORS
from .users import AuditRecorder, Authorize

log = logging.getLogger(__name__)

ENVELOPE_KIND = "moderation"  # socket.moderation.ENVELOPE_KIND
_moderated = msgspec.msgpack.Encoder()
MAX_BAN_S = 10 * 365 * 86_400


class BanRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
    duration_s: int | None = Field(default=None, ge=1, le=MAX_BAN_S,
                                   description="omit for a ban until unbanned")


class BanView(BaseModel):
    user_id: str
    by: str
    at: str
    reason: str | None
    expires_at: str | None
    active: bool


class BanPage(BaseModel):
    bans: list[BanView]
    next_cursor: str | None


class ConversationModerationView(BaseModel):
    conversation_id: str
    frozen: bool
    frozen_by: str | None
    frozen_at: str | None
    muted: list[str]


class MessageDeleted(BaseModel):
    message: dict[str, Any] = Field(description="the tombstone")


def ban_view(ban: Ban) -> dict[str, Any]:
    return {"user_id": ban.user_id, "by": ban.by, "at": ban.at, "reason": ban.reason,
            "expires_at": ban.expires_at, "active": ban_active(ban, now_rfc3339())}


def build_router(*, authorize: Authorize, store: Store, moderation: ModerationStore,
                 fanout: Fanout, sequencer: Sequencer, removal: MessageRemoval,
                 auditor: AuditRecorder,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[], None] = lambda: None) -> APIRouter:
    """``on_change()`` runs after every ban, unban, mute and freeze change: the gateway's
    sign-in cache forgets the bans it holds (gateway/signin.py)."""
    router = APIRouter(prefix="/api/v1/admin/apps/{app_id}", tags=["admin: moderation"],
                       responses=ADMIN_ERRORS)
    viewer = Depends(authorize("viewer"))
    moderator = Depends(authorize("moderator"))

    async def _app(app_id: str, me: Any) -> None:
        await require_app(store, me, app_id)

    async def _user(app_id: str, user_id: str, me: Any) -> None:
        await _app(app_id, me)
        if await moderation.get_user(app_id, user_id) is None:
            raise NotFound("no such user")

    async def _conversation(app_id: str, conversation_id: str, me: Any) -> ConversationState:
        await _app(app_id, me)
        found = await store.get_conversation(conversation_id)
        if found is None or found.app_id != app_id:
            raise NotFound("no such conversation")
        return found

    async def _publish(event: UserModerated) -> None:
        try:
            await removal.bus.publish(topics.USER_MODERATED, f"{event.app_id}\0{event.user_id}",
                                      _moderated.encode(event))
        except Exception as exc:
            log.exception("user.moderated publish failed")
            raise Unavailable(f"the {event.event} change is saved but its event could not be "
                              "published; send the request again") from exc

    async def _announce(env: Envelope) -> None:
        on_change()
        try:
            await fanout.publish(env)
        except Exception:  # replicas' caches expire within socket.moderation.CACHE_TTL_S
            log.exception("moderation fan-out failed")

    @router.get("/bans", response_model=BanPage, summary="The app's banned users")
    async def list_bans(app_id: str, me: Annotated[Any, viewer],
                        limit: Annotated[int, Query(ge=1, le=200)] = 50,
                        cursor: Annotated[str | None, Query(max_length=200)] = None) -> Any:
        await _app(app_id, me)
        found = await moderation.list_bans(app_id, cursor, limit + 1)
        page = found[:limit]
        return {"bans": [ban_view(b) for b in page],
                "next_cursor": page[-1].user_id if len(found) > limit and page else None}

    @router.put("/users/{user_id}/ban", response_model=BanView,
                summary="Ban: no token (403 user_banned), no socket (closed with 4003), "
                        "open sockets closed with 4003")
    async def ban(app_id: str, user_id: str, request: Request,
                  me: Annotated[Any, moderator], body: BanRequest | None = None) -> Any:
        await _user(app_id, user_id, me)
        body = body or BanRequest()
        now = clock()
        entry = Ban(app_id=app_id, user_id=user_id, by=actor(me), at=rfc3339(now),
                    reason=body.reason,
                    expires_at=rfc3339(now + body.duration_s) if body.duration_s else None)
        await moderation.set_ban(entry)
        await auditor.record(request, me, "user.ban", target=user_id, app_id=app_id,
                             detail={"reason": body.reason, "duration_s": body.duration_s})
        await _announce(Envelope(kind=ENVELOPE_KIND, origin="gateway", event="user.banned",
                                 app_id=app_id, recipients=[user_id]))
        await _publish(UserModerated(id=new_id("evt"), app_id=app_id, user_id=user_id,
                                     event="user.banned", by=entry.by, at=entry.at,
                                     reason=entry.reason, expires_at=entry.expires_at))
        return ban_view(entry)

    @router.delete("/users/{user_id}/ban", status_code=204, summary="Unban")
    async def unban(app_id: str, user_id: str, request: Request,
                    me: Annotated[Any, moderator]) -> Response:
        await _user(app_id, user_id, me)
        if not await moderation.remove_ban(app_id, user_id):
            raise NotFound("the user is not banned")
        await auditor.record(request, me, "user.unban", target=user_id, app_id=app_id)
        await _announce(Envelope(kind=ENVELOPE_KIND, origin="gateway", event="user.unbanned",
                                 app_id=app_id, recipients=[user_id]))
        await _publish(UserModerated(id=new_id("evt"), app_id=app_id, user_id=user_id,
                                     event="user.unbanned", by=actor(me), at=now_rfc3339()))
        return Response(status_code=204)

    @router.get("/conversations/{conversation_id}/moderation",
                response_model=ConversationModerationView,
                summary="Whether the conversation is frozen, and who is muted in it")
    async def get_state(app_id: str, conversation_id: str, me: Annotated[Any, viewer]) -> Any:
        await _conversation(app_id, conversation_id, me)
        m = await moderation.conversation_moderation(conversation_id)
        return {"conversation_id": conversation_id, "frozen": m.frozen,
                "frozen_by": m.frozen_by, "frozen_at": m.frozen_at, "muted": m.muted}

    async def _mute(app_id: str, conversation_id: str, user_id: str, muted: bool,
                    request: Request, me: Any) -> bool:
        conv = await _conversation(app_id, conversation_id, me)
        if user_id not in conv.members and await moderation.get_user(app_id, user_id) is None:
            raise NotFound("no such user")
        changed = await moderation.set_mute(app_id, conversation_id, user_id, muted,
                                            actor(me), now_rfc3339())
        await auditor.record(request, me, "conversation.mute" if muted else "conversation.unmute",
                             target=conversation_id, app_id=app_id,
                             detail={"user_id": user_id, "changed": changed})
        await _announce(Envelope(kind=ENVELOPE_KIND, origin="gateway",
                                 event="conversation.moderated", app_id=app_id,
                                 conversation_id=conversation_id))
        return changed

    @router.put("/conversations/{conversation_id}/mutes/{user_id}", status_code=204,
                summary="Mute a user in a conversation: their sends, edits and reactions "
                        "there are refused (forbidden, 'muted: ...')")
    async def mute(app_id: str, conversation_id: str, user_id: str, request: Request,
                   me: Annotated[Any, moderator]) -> Response:
        await _mute(app_id, conversation_id, user_id, True, request, me)
        return Response(status_code=204)

    @router.delete("/conversations/{conversation_id}/mutes/{user_id}", status_code=204,
                   summary="Unmute")
    async def unmute(app_id: str, conversation_id: str, user_id: str, request: Request,
                     me: Annotated[Any, moderator]) -> Response:
        await _mute(app_id, conversation_id, user_id, False, request, me)
        return Response(status_code=204)

    async def _freeze(app_id: str, conversation_id: str, frozen: bool, request: Request,
                      me: Any) -> dict[str, Any]:
        await _conversation(app_id, conversation_id, me)
        changed = await moderation.set_frozen(app_id, conversation_id, frozen, actor(me),
                                              now_rfc3339())
        await auditor.record(request, me,
                             "conversation.freeze" if frozen else "conversation.unfreeze",
                             target=conversation_id, app_id=app_id,
                             detail={"changed": changed})
        await _announce(Envelope(kind=ENVELOPE_KIND, origin="gateway",
                                 event="conversation.moderated", app_id=app_id,
                                 conversation_id=conversation_id))
        m = await moderation.conversation_moderation(conversation_id)
        return {"conversation_id": conversation_id, "frozen": m.frozen,
                "frozen_by": m.frozen_by, "frozen_at": m.frozen_at, "muted": m.muted}

    @router.post("/conversations/{conversation_id}/freeze",
                 response_model=ConversationModerationView,
                 summary="Freeze: nobody sends, edits, reacts or changes members on the socket "
                         "(forbidden, 'frozen: ...'); leaving still works")
    async def freeze(app_id: str, conversation_id: str, request: Request,
                     me: Annotated[Any, moderator]) -> Any:
        return await _freeze(app_id, conversation_id, True, request, me)

    @router.post("/conversations/{conversation_id}/unfreeze",
                 response_model=ConversationModerationView, summary="Unfreeze")
    async def unfreeze(app_id: str, conversation_id: str, request: Request,
                       me: Annotated[Any, moderator]) -> Any:
        return await _freeze(app_id, conversation_id, False, request, me)

    @router.delete("/messages/{message_id}", response_model=MessageDeleted,
                   summary="Delete any message: members get message.deleted, as for the "
                           "sender's own delete; a tombstone is returned as it is")
    async def delete_message(app_id: str, message_id: str, request: Request,
                             me: Annotated[Any, moderator]) -> Any:
        await _app(app_id, me)
        state = await find_message(store, sequencer, app_id, message_id)
        tomb = await removal.remove(state, f"admin:{actor(me)}")
        await auditor.record(request, me, "message.delete", target=message_id, app_id=app_id,
                             detail={"conversation_id": tomb.conversation_id,
                                     "sender_id": tomb.sender_id})
        return {"message": _message(tomb)}

    return router


async def find_message(store: Store, sequencer: Sequencer, app_id: str,
                       message_id: str) -> MessageState:
    """The app's message, also one answered ok that the pipeline has not written yet."""
    state = (await store.get_messages([message_id])).get(message_id)
    if state is None:
        reserved = await sequencer.reserved_message(message_id)
        if reserved is not None:
            conv = await store.get_conversation(reserved.conversation_id)
            if conv is not None:
                state = MessageState(app_id=conv.app_id, message=reserved,
                                     text_event_seq=0, last_event_seq=0)
    if state is None or state.app_id != app_id:
        raise NotFound("no such message")
    return state


def actor(me: Any) -> str:
    """Who acted, as moderation records name them: the admin id, or "root"."""
    return str(getattr(me, "admin_id", "root"))


def _message(m: Any) -> dict[str, Any]:
    return dict(msgspec.to_builtins(m))
