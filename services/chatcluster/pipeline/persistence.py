"""Persist messages and conversations from the bus, a batch at a time."""

from __future__ import annotations

import logging

import msgspec

from chatcluster.domain import rules
from chatcluster.domain.model import MessageState
from chatcluster.ports import bus as topics
from chatcluster.ports.bus import Record
from chatcluster.ports.events import ConversationUpdated, MessageChanged, MessageSent
from chatcluster.ports.store import ActivityMark, LoggedEvent, PipelineBatch, Store

log = logging.getLogger(__name__)

GROUP = "persist"
TOPICS = (topics.MESSAGE_SENT, topics.MESSAGE_EDITED, topics.MESSAGE_DELETED,
          topics.CONVERSATION_UPDATED)

_sent = msgspec.msgpack.Decoder(MessageSent)
_changed = msgspec.msgpack.Decoder(MessageChanged)
_conversation = msgspec.msgpack.Decoder(ConversationUpdated)


async def build_batch(store: Store, records: list[Record]) -> PipelineBatch:
    """Turn bus records into one idempotent Store write.

    Changes are merged onto the stored state (or the state created earlier in this batch) with
    ``rules.apply_change``, which is order-free and idempotent, so a replayed record is a no-op.
    """
    sent = [_sent.decode(r.value) for r in records if r.topic == topics.MESSAGE_SENT]
    changes = [_changed.decode(r.value) for r in records
               if r.topic in (topics.MESSAGE_EDITED, topics.MESSAGE_DELETED)]
    updated = [_conversation.decode(r.value) for r in records
               if r.topic == topics.CONVERSATION_UPDATED]

    batch = PipelineBatch(new_messages=[], changed_messages=[], events=[], activity=[],
                          receipts=[])
    states: dict[str, MessageState] = {}
    for s in sent:
        state = MessageState(app_id=s.app_id, message=s.message, text_event_seq=s.event_seq,
                             last_event_seq=s.event_seq)
        states.setdefault(s.message.id, state)
        batch.new_messages.append(state)
        batch.events.append(LoggedEvent(s.message.conversation_id, s.event_seq, "message.new",
                                        s.message.id))
    activity: dict[str, ActivityMark] = {}
    for s in sent:
        _bump(activity, s.message.conversation_id, s.message.seq, s.event_seq,
              s.message.created_at)

    missing = [c.message_id for c in changes if c.message_id not in states]
    if missing:
        states.update(await store.get_messages(list(dict.fromkeys(missing))))
    touched: set[str] = set()
    for c in changes:
        base = states.get(c.message_id)
        if base is None:
            # Impossible while publishers follow the protocol (a change is published after its
            # message's ok, under the same key); logged rather than blocking the partition.
            log.error("change for an unknown message dropped",
                      extra={"fields": {"message_id": c.message_id, "event_seq": c.event_seq}})
            continue
        states[c.message_id] = rules.apply_change(base, rules.MessageChange(
            c.kind, c.actor, c.event_seq, c.at, text=c.text, emoji=c.emoji))
        touched.add(c.message_id)
        event = "message.deleted" if c.kind == "delete" else "message.updated"
        batch.events.append(LoggedEvent(c.conversation_id, c.event_seq, event, c.message_id))
        _bump(activity, c.conversation_id, 0, c.event_seq, None)
    batch.changed_messages = [states[m] for m in touched]

    for u in updated:
        batch.events.append(LoggedEvent(u.conversation.id, u.event_seq, "conversation.updated"))
        _bump(activity, u.conversation.id, 0, u.event_seq, None)
    batch.activity = list(activity.values())
    return batch


def _bump(activity: dict[str, ActivityMark], conversation_id: str, seq: int, event_seq: int,
          at: str | None) -> None:
    old = activity.get(conversation_id)
    if old is None:
        activity[conversation_id] = ActivityMark(conversation_id, seq, event_seq, at)
        return
    activity[conversation_id] = ActivityMark(
        conversation_id, max(old.last_seq, seq), max(old.last_event_seq, event_seq),
        max(filter(None, (old.last_message_at, at)), default=None))
