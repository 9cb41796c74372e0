"""Deleting a message from outside the socket: moderators, erasure, retention.

It takes exactly the path of a member's ``message.delete`` (``socket.operations``): a fresh
``event_seq`` from the Sequencer, a ``message.deleted`` change on the Bus (durable: the persist
consumer turns it into a tombstone, the sync log records it, webhooks see it), then a
``message.deleted`` event to every member on every replica through the Fanout. The gateway
(moderator delete, erasure) and the consumers process (retention) both use it, so it sits
below them in the import layers.
"""

from __future__ import annotations

import asyncio
import logging

from chatcluster.domain import rules
from chatcluster.domain.ids import now_rfc3339
from chatcluster.domain.model import Message, MessageState
from chatcluster.ports import bus as topics
from chatcluster.ports.bus import Bus
from chatcluster.ports.events import MessageChanged, encoder
from chatcluster.ports.fanout import Envelope, Fanout
from chatcluster.ports.sequencer import Sequencer
from chatcluster.ports.store import Store
from chatcluster.protocol.frames import encode_event

log = logging.getLogger(__name__)

# As a replica's PUBLISH_DEADLINE_S: a number not published by then is announced as skipped.
PUBLISH_DEADLINE_S = 4.0


class MessageRemoval:
    def __init__(self, *, store: Store, sequencer: Sequencer, bus: Bus, fanout: Fanout,
                 origin: str) -> None:
        self.store = store
        self.sequencer = sequencer
        self.bus = bus
        self.fanout = fanout
        self.origin = origin  # the Fanout origin: never a replica id, so every replica delivers

    async def remove(self, state: MessageState, actor: str) -> Message:
        """Tombstone one message; returns the tombstone. A tombstone is returned as it is, with
        no new event (like a member's second delete)."""
        if state.message.deleted:
            return state.message
        m = state.message
        conversation = await self.store.get_conversation(m.conversation_id)
        members = list(conversation.members) if conversation is not None else []
        event_seq = await self.sequencer.next_event_seq(m.conversation_id)
        at = now_rfc3339()
        tomb = rules.apply_change(state, rules.MessageChange("delete", actor, event_seq, at))
        try:
            await asyncio.wait_for(self.bus.publish(
                topics.MESSAGE_DELETED, m.conversation_id,
                encoder.encode(MessageChanged(state.app_id, m.conversation_id, m.id, "delete",
                                              actor, event_seq, at))), PUBLISH_DEADLINE_S)
        except BaseException:
            await self._announce(Envelope(kind="skip", origin=self.origin, app_id=state.app_id,
                                          conversation_id=m.conversation_id,
                                          event_seq=event_seq))
            raise
        await self._announce(Envelope(
            kind="event", origin=self.origin, event="message.deleted", app_id=state.app_id,
            recipients=members,
            frame=encode_event("message.deleted", {"message": tomb.message}, event_seq),
            conversation_id=m.conversation_id, event_seq=event_seq))
        return tomb.message

    async def _announce(self, envelope: Envelope) -> None:
        try:
            await self.fanout.publish(envelope)
        except Exception:  # best effort by contract: members recover with conversation.sync
            log.exception("fan-out of a removal failed")
