"""Every op of PROTOCOL.md §2: domain rules over the ports.

The write path of every change is the same: load the state, let ``domain.rules`` decide,
take numbers from the Sequencer, make the change durable (Bus, or Store for membership),
then fan the event out and answer. Nothing is fanned out or answered ok before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import msgspec

from chatcluster.domain import moderation as moderation_rules
from chatcluster.domain import rules
from chatcluster.domain.errors import (
    BadRequest,
    NotFound,
    RateLimited,
    Unavailable,
    VersionConflict,
)
from chatcluster.domain.ids import new_id, now_rfc3339
from chatcluster.domain.model import ConversationState, ConversationView, Message, MessageState
from chatcluster.domain.moderation import Action, Flag, flag_id, flag_view
from chatcluster.ports import bus as topics
from chatcluster.ports.bus import Bus
from chatcluster.ports.events import (
    ConversationUpdated,
    MessageChanged,
    MessageFlagged,
    MessageSent,
    ReceiptSubmitted,
    encoder,
)
from chatcluster.ports.membership import MembershipCache
from chatcluster.ports.sequencer import Sequencer
from chatcluster.ports.store import ConversationExtras, Store
from chatcluster.protocol import ops
from chatcluster.protocol.frames import encode_event
from chatcluster.quotas import Quotas
from chatcluster.socket.connection import ClientConnection, SendTicket
from chatcluster.socket.delivery import EventPublisher
from chatcluster.socket.moderation import ModerationGate
from chatcluster.socket.presence import Presence

log = logging.getLogger(__name__)

# Membership is cached for fan-out and authorization; every conversation.updated envelope
# refreshes it on every replica, and this bound covers an envelope that was lost. Behind this
# per-replica copy sits the shared MembershipCache (Redis), then the Store.
CONVERSATION_CACHE_TTL_S = 5.0
CAS_ATTEMPTS = 8
RECENT_MESSAGES = 10_000
# A change not durable by then is answered "unavailable" (its number announced as skipped):
# the bound on how long another replica may have to hold later events for it (delivery.HOLD_S).
PUBLISH_DEADLINE_S = 4.0
# A membership refresh that takes longer falls back to the (expired) cached copy, if any.
STORE_READ_DEADLINE_S = 1.0
# The SendTicket of the request being served (set by the server around each send's task).
CURRENT_TICKET: ContextVar[SendTicket | None] = ContextVar("send_ticket", default=None)
T = TypeVar("T")
READ_MARKS_MAX_MEMBERS = 100
MODERATED_AS: dict[str, Action] = {"edit": "edit", "delete": "delete", "reaction.add": "react",
                                   "reaction.remove": "react"}


class Operations:
    def __init__(self, *, store: Store, sequencer: Sequencer, bus: Bus,
                 events: EventPublisher, presence: Presence,
                 membership: MembershipCache | None = None,
                 moderation: ModerationGate | None = None,
                 quotas: Quotas | None = None) -> None:
        self.store = store
        self.quotas = quotas
        self.membership = membership
        self.moderation = moderation
        self.sequencer = sequencer
        self.bus = bus
        self.events = events
        self.presence = presence
        self._conversations: dict[str, tuple[float, ConversationState]] = {}
        # message_id -> (event_seq, state) of the latest message.updated/deleted this replica
        # published or saw fanned out: fresher than the Store while the pipeline catches up.
        self._recent: OrderedDict[str, tuple[int, Message]] = OrderedDict()
        self.handlers: dict[str, Callable[[ClientConnection, Any], Awaitable[Any]]] = {
            "conversation.create": self.conversation_create,
            "conversation.list": self.conversation_list,
            "conversation.get": self.conversation_get,
            "conversation.update": self.conversation_update,
            "conversation.add_members": self.conversation_add_members,
            "conversation.remove_members": self.conversation_remove_members,
            "conversation.leave": self.conversation_leave,
            "conversation.set_role": self.conversation_set_role,
            "conversation.sync": self.conversation_sync,
            "message.send": self.message_send,
            "message.edit": self.message_edit,
            "message.delete": self.message_delete,
            "message.forward": self.message_forward,
            "message.flag": self.message_flag,
            "reaction.add": self.reaction_add,
            "reaction.remove": self.reaction_remove,
            "message.history": self.message_history,
            "receipt.delivered": self.receipt_delivered,
            "receipt.read": self.receipt_read,
            "typing.start": self.typing_start,
            "typing.stop": self.typing_stop,
            "presence.get": self.presence_get,
            "user.get": self.user_get,
            "ping": self.ping,
        }

    # -- shared steps --------------------------------------------------------------------------
    async def conversation(self, conversation_id: str, *, fresh: bool = False
                           ) -> ConversationState | None:
        """Membership: this replica's copy, else the shared cache, else the Store
        (``fresh``: the Store, always)."""
        hit = self._conversations.get(conversation_id)
        if hit is not None and not fresh and hit[0] > time.monotonic():
            return hit[1]
        if not fresh:
            shared = await self._shared_get(conversation_id)
            if shared is not None and (hit is None or shared.version >= hit[1].version):
                self.remember(shared)
                return shared
        if hit is None or fresh:
            state = await self.store.get_conversation(conversation_id)
        else:
            try:
                state = await asyncio.wait_for(self.store.get_conversation(conversation_id),
                                               STORE_READ_DEADLINE_S)
            except (TimeoutError, Unavailable):
                # Membership only changes through the store, so while it is down the copy we
                # hold is still right: sends keep flowing through an outage (the send path
                # itself needs only the Sequencer and the Bus).
                return hit[1]
        if state is not None:
            self.remember(state)
            await self._shared_put(state)
        return state

    async def _shared_get(self, conversation_id: str) -> ConversationState | None:
        if self.membership is None:
            return None
        try:
            return await asyncio.wait_for(self.membership.get(conversation_id),
                                          STORE_READ_DEADLINE_S)
        except Exception as exc:  # a cache that fails is a miss: the Store answers
            log.warning("membership cache read failed", extra={"fields": {"error": repr(exc)}})
            return None

    async def _shared_put(self, state: ConversationState) -> None:
        if self.membership is None:
            return
        try:
            await asyncio.wait_for(self.membership.put(state), STORE_READ_DEADLINE_S)
        except Exception as exc:
            log.warning("membership cache write failed", extra={"fields": {"error": repr(exc)}})

    async def _shared_forget(self, conversation_id: str) -> None:
        """Before saving a new version: if the put after the save never happens, readers
        miss (and read the Store) instead of reading the old version."""
        if self.membership is None:
            return
        try:
            await asyncio.wait_for(self.membership.forget(conversation_id),
                                   STORE_READ_DEADLINE_S)
        except Exception as exc:
            raise Unavailable("membership cache unavailable; retry") from exc

    async def moderate(self, conn: ClientConnection, conversation_id: str,
                       action: Action) -> None:
        """Refuse what a ban, a mute or a freeze forbids (domain.moderation); after the
        membership check, so a non-member learns nothing about the conversation."""
        if self.moderation is not None:
            await self.moderation.check(conn.app_id, conn.user_id, conversation_id, action)

    def remember(self, state: ConversationState) -> None:
        """Cache a conversation state unless a newer one is cached (every replica calls this
        for every conversation.updated envelope it sees)."""
        hit = self._conversations.get(state.id)
        if hit is None or hit[1].version <= state.version:
            self._conversations[state.id] = (time.monotonic() + CONVERSATION_CACHE_TTL_S, state)
        if len(self._conversations) > 200_000:
            self._conversations.clear()

    def note_message(self, message: Message, event_seq: int) -> None:
        """Remember the newest state of a changed message (see ``_recent``)."""
        known = self._recent.get(message.id)
        if known is None or known[0] < event_seq:
            self._recent[message.id] = (event_seq, message)
            self._recent.move_to_end(message.id)
            if len(self._recent) > RECENT_MESSAGES:
                self._recent.popitem(last=False)

    def forget(self, conversation_id: str) -> None:
        self._conversations.pop(conversation_id, None)

    async def quota(self, conn: ClientConnection) -> None:
        """The app's and the user's message quotas (auth.quotas), shared by every replica."""
        if self.quotas is None:
            return
        wait = await self.quotas.send(conn.app_id, conn.user_id)
        if wait > 0:
            raise RateLimited("message quota of this user or app spent for this minute",
                              retry_after_ms=max(1, math.ceil(wait * 1000)))

    async def member_conversation(self, conn: ClientConnection,
                                  conversation_id: str) -> ConversationState:
        state = await self.conversation(conversation_id)
        if state is not None and conn.user_id not in state.members:
            state = await self.conversation(conversation_id, fresh=True)  # maybe just added
        if state is None or state.app_id != conn.app_id:
            raise NotFound("conversation not found")
        return rules.require_member(state, conn.user_id)

    async def message_state(self, conn: ClientConnection, message_id: str
                            ) -> tuple[MessageState, ConversationState]:
        """A message and its conversation, which the caller must be a member of."""
        found = (await self.store.get_messages([message_id])).get(message_id)
        if found is None:
            reserved = await self.sequencer.reserved_message(message_id)
            if reserved is not None:  # answered ok, not yet written by the pipeline
                conv = await self.conversation(reserved.conversation_id)
                app_id = conv.app_id if conv is not None else ""
                found = MessageState(app_id=app_id, message=reserved, text_event_seq=0,
                                     last_event_seq=0)
        if found is None or found.app_id != conn.app_id:
            raise NotFound("message not found")
        recent = self._recent.get(message_id)
        if recent is not None and recent[0] > found.last_event_seq:
            found = _state_from_event(found.app_id, recent[1], recent[0])
        conv_state = await self.member_conversation(conn, found.message.conversation_id)
        return found, conv_state

    async def views(self, states: list[ConversationState], user: str
                    ) -> list[ConversationView]:
        extras = await self.store.conversation_extras([s.id for s in states], user)
        return [conversation_view(s, extras.get(s.id), user) for s in states]

    # -- conversations -------------------------------------------------------------------------
    async def conversation_create(self, conn: ClientConnection,
                                  d: ops.ConversationCreate) -> dict[str, Any]:
        now = now_rfc3339()
        conversation_id = new_id("c")
        # Validate before taking a number: a refused request burns nothing.
        probe = rules.new_conversation(conversation_id=conversation_id, app_id=conn.app_id,
                                       creator=conn.user_id, type=d.type, members=d.members,
                                       title=d.title, now=now, event_seq=0)
        event_seq = await self.sequencer.next_event_seq(conversation_id)
        state = await self.store.create_conversation(
            msgspec.structs.replace(probe, version=event_seq))
        self.remember(state)
        await self._shared_put(state)
        if state.id == conversation_id:  # a new one, not the existing direct conversation
            await self.conversation_changed(conn, state, state.members)
        (view,) = await self.views([state], conn.user_id)
        return {"conversation": view}

    async def conversation_list(self, conn: ClientConnection,
                                d: ops.ConversationList) -> dict[str, Any]:
        states, cursor = await self.store.list_conversations(conn.app_id, conn.user_id, d.limit,
                                                             d.cursor)
        return {"conversations": await self.views(states, conn.user_id), "next_cursor": cursor}

    async def conversation_get(self, conn: ClientConnection,
                               d: ops.ConversationRef) -> dict[str, Any]:
        state = await self.member_conversation(conn, d.conversation_id)
        (view,) = await self.views([state], conn.user_id)
        return {"conversation": view}

    async def change_conversation(
        self, conn: ClientConnection, conversation_id: str,
        change: Callable[[ConversationState, int], ConversationState],
        action: Action = "manage",
    ) -> ConversationState:
        """Compare-and-set loop: decide on a fresh state, take a number, save if unchanged."""
        for attempt in range(CAS_ATTEMPTS):
            state = await self.conversation(conversation_id, fresh=True)
            if state is None or state.app_id != conn.app_id:
                raise NotFound("conversation not found")
            if attempt == 0 and conn.user_id in state.members:
                await self.moderate(conn, conversation_id, action)
            probe = change(state, state.version)  # raises if the rules refuse
            if probe == state:
                return state  # nothing to change: no event, no number
            event_seq = await self.sequencer.next_event_seq(conversation_id)
            new = change(state, event_seq)
            try:
                await self._shared_forget(conversation_id)
                await self.store.save_conversation(new, expected_version=state.version)
            except VersionConflict:
                # Another replica changed it first: decide again on its state.
                await self.events.skip(state.app_id, conversation_id, event_seq)
                continue
            except Exception:
                await self.events.skip(state.app_id, conversation_id, event_seq)
                raise
            self.remember(new)
            await self._shared_put(new)
            await self.conversation_changed(conn, new, list(dict.fromkeys(
                [*state.members, *new.members])))
            return new
        raise Unavailable("the conversation is changing too fast; retry")

    async def conversation_changed(self, conn: ClientConnection | None,
                                   state: ConversationState, recipients: list[str]) -> None:
        payload = encoder.encode(ConversationUpdated(state.app_id, state, state.version))
        try:
            await self._publish(topics.CONVERSATION_UPDATED, state.id, payload)
        except Exception:  # saved, but no event will come for its number
            await self.events.skip(state.app_id, state.id, state.version)
            raise
        # Each member sees its own last_read_seq and unread_count: one frame per recipient.
        frames: dict[str, bytes] = {}
        for user in recipients:
            extras = await self.store.conversation_extras([state.id], user)
            view = conversation_view(state, extras.get(state.id), user)
            frames[user] = encode_event("conversation.updated", {"conversation": view},
                                        state.version)
        await self.events.publish(conn, state.app_id, "conversation.updated", None, recipients,
                                 state.id, state.version, frames=frames)

    async def conversation_update(self, conn: ClientConnection,
                                  d: ops.ConversationUpdate) -> dict[str, Any]:
        state = await self.change_conversation(
            conn, d.conversation_id, lambda s, n: rules.set_title(s, conn.user_id, d.title, n))
        (view,) = await self.views([state], conn.user_id)
        return {"conversation": view}

    async def conversation_add_members(self, conn: ClientConnection,
                                       d: ops.ConversationMembers) -> dict[str, Any]:
        state = await self.change_conversation(
            conn, d.conversation_id,
            lambda s, n: rules.add_members(s, conn.user_id, d.members, n))
        (view,) = await self.views([state], conn.user_id)
        return {"conversation": view}

    async def conversation_remove_members(self, conn: ClientConnection,
                                          d: ops.ConversationMembers) -> dict[str, Any]:
        state = await self.change_conversation(
            conn, d.conversation_id,
            lambda s, n: rules.remove_members(s, conn.user_id, d.members, n))
        (view,) = await self.views([state], conn.user_id)
        return {"conversation": view}

    async def conversation_leave(self, conn: ClientConnection,
                                 d: ops.ConversationRef) -> dict[str, Any]:
        await self.change_conversation(conn, d.conversation_id,
                                       lambda s, n: rules.leave(s, conn.user_id, n),
                                       action="leave")
        return {}

    async def conversation_set_role(self, conn: ClientConnection,
                                    d: ops.ConversationSetRole) -> dict[str, Any]:
        state = await self.change_conversation(
            conn, d.conversation_id,
            lambda s, n: rules.set_role(s, conn.user_id, d.user_id, d.role, n))
        (view,) = await self.views([state], conn.user_id)
        return {"conversation": view}

    async def conversation_sync(self, conn: ClientConnection,
                                d: ops.ConversationSync) -> dict[str, Any]:
        state = await self.member_conversation(conn, d.conversation_id)
        logged, has_more = await self.store.sync_log(d.conversation_id, d.after_event_seq,
                                                      d.limit)
        ids = [e.message_id for e in logged if e.message_id is not None]
        messages = await self.store.get_messages(ids)
        conversation: ConversationView | None = None
        events: list[dict[str, Any]] = []
        for e in logged:
            if e.message_id is not None:
                found = messages.get(e.message_id)
                if found is None:
                    continue
                data: dict[str, Any] = {"message": found.message}
            else:
                if conversation is None:
                    (conversation,) = await self.views([state], conn.user_id)
                data = {"conversation": conversation}
            events.append({"event": e.event, "event_seq": e.event_seq, "data": data})
        return {"events": events, "has_more": has_more}

    # -- messages ------------------------------------------------------------------------------
    async def _publish(self, topic: str, key: str, value: bytes) -> None:
        try:
            await asyncio.wait_for(self.bus.publish(topic, key, value), PUBLISH_DEADLINE_S)
        except TimeoutError:
            raise Unavailable("the event bus did not acknowledge in time; retry") from None

    def admit(self, conn: ClientConnection, op: str, data: Any) -> SendTicket | None:
        """Called by the read loop in frame order: sends take their place in line here."""
        if op in ("message.send", "message.forward"):
            return SendTicket(conn, data.conversation_id)
        return None

    async def _in_send_order(self, conn: ClientConnection, conversation_id: str,
                             reserve: Callable[[], Awaitable[T]]) -> T:
        """Run ``reserve`` after every earlier send of this connection to this conversation."""
        ticket = CURRENT_TICKET.get() or SendTicket(conn, conversation_id)
        try:
            await ticket.turn()
            return await reserve()
        finally:
            ticket.release()

    async def _append(self, conn: ClientConnection, conv: ConversationState,
                      draft: Message) -> Message:
        """Reserve, make durable, fan out: the path of every new message."""
        reservation = await self._in_send_order(
            conn, conv.id, lambda: self.sequencer.reserve_message(draft))
        message: Message = reservation.message
        # Published again on a resend too: if the first attempt died between reserve and
        # publish, this makes it durable before the ok; consumers deduplicate by id.
        try:
            await self._publish(topics.MESSAGE_SENT, conv.id, encoder.encode(
                MessageSent(conv.app_id, message, reservation.event_seq)))
        except Exception:
            if reservation.created:
                await self.events.skip(conv.app_id, conv.id, reservation.event_seq)
            raise
        if reservation.created:
            await self.events.publish(conn, conv.app_id, "message.new", {"message": message},
                                     conv.members, conv.id, reservation.event_seq)
        return message

    async def message_send(self, conn: ClientConnection, d: ops.MessageSend) -> dict[str, Any]:
        conv = await self.member_conversation(conn, d.conversation_id)
        await self.moderate(conn, conv.id, "send")
        await self.quota(conn)
        reply: Message | None = None
        if d.reply_to is not None:
            try:
                reply = (await self.message_state(conn, d.reply_to))[0].message
            except NotFound:
                reply = None
        draft = rules.new_message(
            message_id=new_id("m"), conversation=conv, sender=conn.user_id,
            client_msg_id=d.client_msg_id, text=d.text, now=now_rfc3339(), reply_to=reply,
            reply_to_id=d.reply_to, attachments=d.attachments)
        return {"message": await self._append(conn, conv, draft)}

    async def message_forward(self, conn: ClientConnection,
                              d: ops.MessageForward) -> dict[str, Any]:
        source, source_conv = await self.message_state(conn, d.message_id)
        target = await self.member_conversation(conn, d.conversation_id)
        await self.moderate(conn, target.id, "send")
        await self.quota(conn)
        origin = rules.forward_source(source, source_conv, conn.user_id)
        draft = rules.new_message(
            message_id=new_id("m"), conversation=target, sender=conn.user_id,
            client_msg_id=d.client_msg_id, text=source.message.text, now=now_rfc3339(),
            reply_to=None, reply_to_id=None, attachments=source.message.attachments,
            forwarded_from=origin)
        return {"message": await self._append(conn, target, draft)}

    async def _change_message(self, conn: ClientConnection, message_id: str,
                              kind: rules.ChangeKind, text: str | None = None,
                              emoji: str | None = None) -> dict[str, Any]:
        state, conv = await self.message_state(conn, message_id)
        await self.moderate(conn, conv.id, MODERATED_AS[kind])
        if not rules.authorize_change(state, kind, conn.user_id):
            return {"message": state.message}  # deleting a tombstone returns it again
        if kind in ("reaction.add", "reaction.remove"):
            assert emoji is not None
            present = rules.reaction_present(state, emoji, conn.user_id)
            if present == (kind == "reaction.add"):
                return {"message": state.message}  # already so: no event
        event_seq = await self.sequencer.next_event_seq(conv.id)
        at = now_rfc3339()
        change = rules.MessageChange(kind, conn.user_id, event_seq, at, text=text, emoji=emoji)
        new = rules.apply_change(state, change)
        self.note_message(new.message, event_seq)
        topic = topics.MESSAGE_DELETED if kind == "delete" else topics.MESSAGE_EDITED
        try:
            await self._publish(topic, conv.id, encoder.encode(MessageChanged(
                conv.app_id, conv.id, message_id, kind, conn.user_id, event_seq, at, text,
                emoji)))
        except Exception:
            await self.events.skip(conv.app_id, conv.id, event_seq)
            raise
        event = "message.deleted" if kind == "delete" else "message.updated"
        await self.events.publish(conn, conv.app_id, event, {"message": new.message},
                                 conv.members, conv.id, event_seq)
        return {"message": new.message}

    async def message_edit(self, conn: ClientConnection, d: ops.MessageEdit) -> dict[str, Any]:
        rules.check_text(d.text)
        return await self._change_message(conn, d.message_id, "edit", text=d.text)

    async def message_delete(self, conn: ClientConnection, d: ops.MessageRef) -> dict[str, Any]:
        return await self._change_message(conn, d.message_id, "delete")

    async def reaction_add(self, conn: ClientConnection, d: ops.Reaction) -> dict[str, Any]:
        rules.check_emoji(d.emoji)
        return await self._change_message(conn, d.message_id, "reaction.add", emoji=d.emoji)

    async def reaction_remove(self, conn: ClientConnection, d: ops.Reaction) -> dict[str, Any]:
        rules.check_emoji(d.emoji)
        return await self._change_message(conn, d.message_id, "reaction.remove", emoji=d.emoji)

    async def message_flag(self, conn: ClientConnection, d: ops.MessageFlag) -> dict[str, Any]:
        """Report a message to the app's moderators (docs/moderation.md "Flags")."""
        if self.moderation is None:
            raise Unavailable("flagging is not available on this replica")
        found, _ = await self.message_state(conn, d.message_id)
        m = found.message
        moderation_rules.check_flag(conn.user_id, m.sender_id, m.deleted)
        kept = await self.moderation.store.add_flag(Flag(
            id=flag_id(conn.app_id, m.id, conn.user_id), app_id=conn.app_id, message_id=m.id,
            conversation_id=m.conversation_id, sender_id=m.sender_id,
            flagged_by=conn.user_id, reason=d.reason, note=d.note, created_at=now_rfc3339()))
        if kept.status == "open":  # again on a repeat: the webhook outbox deduplicates
            await self._publish(topics.MESSAGE_FLAGGED, m.id,
                                encoder.encode(MessageFlagged(conn.app_id, kept)))
        return {"flag": flag_view(kept)}

    async def message_history(self, conn: ClientConnection,
                              d: ops.MessageHistory) -> dict[str, Any]:
        await self.member_conversation(conn, d.conversation_id)
        states, has_more = await self.store.history(d.conversation_id, d.before_seq,
                                                    d.after_seq, d.limit)
        return {"messages": [s.message for s in states], "has_more": has_more}

    # -- receipts, typing, presence, users -----------------------------------------------------
    async def _receipt(self, conn: ClientConnection, d: ops.Receipt,
                       kind: str) -> dict[str, Any]:
        conv = await self.member_conversation(conn, d.conversation_id)
        if d.seq > await self.sequencer.last_seq(conv.id):
            raise BadRequest("data.seq: beyond the conversation's last message")
        await self._publish(topics.MESSAGE_DELIVERED, conv.id, encoder.encode(
            ReceiptSubmitted(conv.app_id, conv.id, conn.user_id,
                             "read" if kind == "read" else "delivered", d.seq,
                             list(conv.members), conn.conn_id)))
        return {}

    async def receipt_delivered(self, conn: ClientConnection, d: ops.Receipt) -> dict[str, Any]:
        return await self._receipt(conn, d, "delivered")

    async def receipt_read(self, conn: ClientConnection, d: ops.Receipt) -> dict[str, Any]:
        return await self._receipt(conn, d, "read")

    async def typing_start(self, conn: ClientConnection, d: ops.ConversationRef) -> dict[str, Any]:
        conv = await self.member_conversation(conn, d.conversation_id)
        await self.presence.typing(conn, conv, True)
        return {}

    async def typing_stop(self, conn: ClientConnection, d: ops.ConversationRef) -> dict[str, Any]:
        conv = await self.member_conversation(conn, d.conversation_id)
        await self.presence.typing(conn, conv, False)
        return {}

    async def _visible_users(self, conn: ClientConnection, users: list[str]) -> list[str]:
        users = list(dict.fromkeys(users))
        related = await self.store.related_users(conn.app_id, conn.user_id, users)
        return [u for u in users if u == conn.user_id or u in related]

    async def presence_get(self, conn: ClientConnection, d: ops.UserLookup) -> dict[str, Any]:
        visible = await self._visible_users(conn, d.users)
        found = await self.presence.lookup(conn.app_id, visible)
        return {"presence": {u: {"online": p.online, "last_seen": p.last_seen}
                             for u, p in found.items()}}

    async def user_get(self, conn: ClientConnection, d: ops.UserLookup) -> dict[str, Any]:
        visible = await self._visible_users(conn, d.users)
        names = await self.store.display_names(conn.app_id, visible)
        return {"users": {u: {"display_name": names.get(u)} for u in visible}}

    async def ping(self, conn: ClientConnection, d: ops.Ping) -> dict[str, Any]:
        return {"server_time": now_rfc3339()}


def conversation_view(state: ConversationState, extras: ConversationExtras | None,
                      user: str) -> ConversationView:
    activity = extras.activity if extras is not None else None
    marks = extras.read_marks if extras is not None else {}
    read_marks = ({m: marks.get(m, 0) for m in state.members}
                  if len(state.members) <= READ_MARKS_MAX_MEMBERS else None)
    return ConversationView(
        id=state.id, type=state.type, title=state.title, members=state.members,
        owner=state.owner, admins=state.admins, created_at=state.created_at,
        last_seq=activity.last_seq if activity else 0,
        last_event_seq=max(activity.last_event_seq if activity else 0, state.version),
        last_message_at=activity.last_message_at if activity else None,
        last_read_seq=marks.get(user, 0),
        unread_count=extras.unread_count if extras is not None else 0,
        read_marks=read_marks)


def _state_from_event(app_id: str, message: Message, event_seq: int) -> MessageState:
    """A MessageState rebuilt from an event's message: reaction marks keep the shown order and
    stay below any later change's event_seq, which is all the caller needs to apply one."""
    marks = {emoji: {user: i + 1 for i, user in enumerate(users)}
             for emoji, users in message.reactions.items()}
    return MessageState(app_id=app_id, message=message, text_event_seq=event_seq,
                        reaction_marks=marks, last_event_seq=event_seq)
