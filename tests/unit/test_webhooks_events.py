"""Bus records -> webhook events: payloads, stable ids, member changes from conversation.updated."""

from __future__ import annotations

from chatcluster.domain.model import ConversationState, Message
from chatcluster.pipeline.webhooks import events_from_records
from chatcluster.ports import bus as topics
from chatcluster.ports.bus import Record
from chatcluster.ports.events import (
    ConversationUpdated,
    MessageChanged,
    MessageSent,
    UserModerated,
    encoder,
)
from chatcluster.ports.webhooks import MembersMark

AT = "2026-01-01T00:00:00.000Z"


class Marks:
    """The two WebhookStore methods the event builder reads."""

    def __init__(self) -> None:
        self.marks: dict[str, MembersMark] = {}

    async def members(self, conversation_id: str) -> MembersMark | None:
        return self.marks.get(conversation_id)


def record(topic: str, value: bytes, offset: int = 0) -> Record:
    return Record(topic=topic, key="c1", value=value, partition=0, offset=offset)


def updated(members: list[str], version: int) -> Record:
    state = ConversationState(id="c1", app_id="app", type="group", title="t", members=members,
                              owner=members[0], admins=[], created_at=AT, version=version)
    return record(topics.CONVERSATION_UPDATED,
                  encoder.encode(ConversationUpdated("app", state, version)))


async def test_messages_and_changes_become_events() -> None:
    message = Message(id="m1", conversation_id="c1", seq=1, sender_id="alice", text="hi",
                      client_msg_id="x", created_at=AT)
    records = [record(topics.MESSAGE_SENT, encoder.encode(MessageSent("app", message, 4))),
               record(topics.MESSAGE_EDITED, encoder.encode(MessageChanged(
                   "app", "c1", "m1", "edit", "alice", 5, AT, text="hello"))),
               record(topics.MESSAGE_EDITED, encoder.encode(MessageChanged(
                   "app", "c1", "m1", "reaction.add", "bob", 6, AT, emoji="👍"))),
               record(topics.MESSAGE_DELETED, encoder.encode(MessageChanged(
                   "app", "c1", "m1", "delete", "alice", 7, AT)))]
    events, marks = await events_from_records(Marks(), records)  # type: ignore[arg-type]
    assert [e.type for e in events] == ["message.sent", "message.edited", "reaction.added",
                                        "message.deleted"]
    assert events[0].data["message"]["text"] == "hi" and events[0].event_seq == 4
    assert events[1].data == {"conversation_id": "c1", "message_id": "m1", "actor": "alice",
                              "at": AT, "text": "hello"}
    assert events[2].data["emoji"] == "👍"
    assert len({e.id for e in events}) == 4 and marks == {}
    again, _ = await events_from_records(Marks(), records)  # type: ignore[arg-type]
    assert [e.id for e in again] == [e.id for e in events]  # a replay: the same ids


async def test_member_changes_are_the_difference_from_the_last_membership_seen() -> None:
    store = Marks()
    events, marks = await events_from_records(store, [  # type: ignore[arg-type]
        updated(["a", "b"], 1), updated(["a", "b", "c", "d"], 2), updated(["a", "d"], 3)])
    kinds = [(e.type, e.data.get("members")) for e in events if e.type.startswith("member.")]
    assert kinds == [("member.added", ["a", "b"]), ("member.added", ["c", "d"]),
                     ("member.removed", ["b", "c"])]
    assert marks == {"c1": MembersMark(3, ["a", "d"])}
    store.marks.update(marks)
    # Replayed or older updates announce no member change again.
    replay = [updated(["a", "b", "c", "d"], 2)]
    events, marks = await events_from_records(store, replay)  # type: ignore[arg-type]
    assert [e.type for e in events] == ["conversation.updated"] and marks == {}


async def test_bans_become_user_events_with_the_id_they_were_published_with() -> None:
    ban = UserModerated(id="evt_b1", app_id="app", user_id="mallory", event="user.banned",
                        by="adm_1", at=AT, reason="spam", expires_at="2026-01-02T00:00:00.000Z")
    unban = UserModerated(id="evt_b2", app_id="app", user_id="mallory", event="user.unbanned",
                          by="adm_1", at=AT)
    records = [record(topics.USER_MODERATED, encoder.encode(ban)),
               record(topics.USER_MODERATED, encoder.encode(unban), offset=1)]
    events, marks = await events_from_records(Marks(), records)  # type: ignore[arg-type]
    assert [(e.id, e.type, e.conversation_id, e.event_seq) for e in events] == [
        ("evt_b1", "user.banned", None, None), ("evt_b2", "user.unbanned", None, None)]
    assert events[0].data == {"user_id": "mallory", "by": "adm_1", "at": AT, "reason": "spam",
                              "expires_at": "2026-01-02T00:00:00.000Z"}
    assert marks == {}
    again, _ = await events_from_records(Marks(), records[:1])  # type: ignore[arg-type]
    assert again[0].id == "evt_b1"  # a replayed record: the same event, deduplicated
