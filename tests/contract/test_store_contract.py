"""Store contract: tenants, sessions, conversations by compare-and-set, idempotent pipeline
batches, history and sync pages."""

from __future__ import annotations

import pytest

from chatcluster.domain import rules
from chatcluster.domain.errors import VersionConflict
from chatcluster.domain.model import App, ConversationState, Message, MessageState, Session
from chatcluster.ports.store import ActivityMark, LoggedEvent, PipelineBatch, ReceiptMark, Store

T0 = "2026-01-01T00:00:00.000Z"


def conversation(cid: str, members: list[str], *, app: str = "app", direct: bool = False,
                 version: int = 1) -> ConversationState:
    return rules.new_conversation(conversation_id=cid, app_id=app, creator=members[0],
                                  type="direct" if direct else "group", members=members[1:],
                                  title=None, now=T0, event_seq=version)


def message(cid: str, seq: int, sender: str = "alice", at: str = T0) -> MessageState:
    m = Message(id=f"{cid}-m{seq}", conversation_id=cid, seq=seq, sender_id=sender,
                text=f"t{seq}", client_msg_id=f"k{seq}", created_at=at)
    return MessageState(app_id="app", message=m, text_event_seq=seq + 1, last_event_seq=seq + 1)


def sent_batch(cid: str, seqs: range, sender: str = "alice") -> PipelineBatch:
    states = [message(cid, s, sender, f"2026-01-01T00:00:{s:02d}.000Z") for s in seqs]
    return PipelineBatch(
        new_messages=states,
        events=[LoggedEvent(cid, s.last_event_seq, "message.new", s.message.id) for s in states],
        activity=[ActivityMark(cid, seqs[-1], seqs[-1] + 1, states[-1].message.created_at)])


async def test_apps_users_and_sessions(store_backend) -> None:
    store: Store = (await store_backend.open())
    await store.create_app(App(id="app", name="n", secret_digest="d", created_at=T0))
    assert (await store.get_app("app")).name == "n"
    assert await store.get_app("nope") is None
    await store.ensure_user("app", "alice", "Alice", T0)
    await store.ensure_user("app", "alice", None, T0)  # signing in again keeps the name
    await store.ensure_user("app", "bob", None, T0)
    assert await store.display_names("app", ["alice", "bob", "zed"]) == {
        "alice": "Alice", "bob": None}
    assert await store.display_names("other", ["alice"]) == {}

    await store.create_session(Session(id="s1", app_id="app", user_id="alice",
                                       refresh_jti="j1", created_at=T0))
    other: Store = (await store_backend.open())
    assert await other.rotate_refresh("s1", "j1", "j2") is True
    assert await store.rotate_refresh("s1", "j1", "j3") is False, "a stale jti loses"
    assert (await store.get_session("s1")).refresh_jti == "j2"
    await store.revoke_session("s1", "2026-01-01T00:00:05.000Z")
    assert (await other.get_session("s1")).revoked_at == "2026-01-01T00:00:05.000Z"
    assert await store.rotate_refresh("s1", "j2", "j4") is False, "revoked sessions never rotate"
    assert await store.revoked_sessions_since("2026-01-01T00:00:01.000Z") == ["s1"]
    assert await store.revoked_sessions_since("2026-01-01T00:00:06.000Z") == []



async def test_sign_in_writes_the_user_and_the_session(store_backend) -> None:
    store: Store = (await store_backend.open())
    await store.sign_in(Session(id="s1", app_id="app", user_id="carol", refresh_jti="j1",
                                created_at=T0), "Carol")
    await store.sign_in(Session(id="s2", app_id="app", user_id="carol", refresh_jti="j2",
                                created_at=T0), None)  # again, without a name: kept
    await store.sign_in(Session(id="s3", app_id="app", user_id="dan", refresh_jti="j3",
                                created_at=T0), None)
    other: Store = (await store_backend.open())
    assert await other.display_names("app", ["carol", "dan"]) == {"carol": "Carol", "dan": None}
    first, second = await other.get_session("s1"), await other.get_session("s2")
    assert (first.user_id, first.refresh_jti, first.revoked_at) == ("carol", "j1", None)
    assert (second.user_id, second.refresh_jti) == ("carol", "j2")
    assert (await other.get_session("s3")).user_id == "dan"


async def test_direct_conversations_are_unique_per_pair(store_backend) -> None:
    store: Store = (await store_backend.open())
    first = await store.create_conversation(conversation("c1", ["a", "b"], direct=True))
    again = await (await store_backend.open()).create_conversation(
        conversation("c2", ["b", "a"], direct=True))
    assert again == first
    elsewhere = await store.create_conversation(conversation("c3", ["a", "b"], app="app2",
                                                             direct=True))
    assert elsewhere.id == "c3", "the pair is unique per app"


async def test_conversations_change_by_compare_and_set(store_backend) -> None:
    store: Store = (await store_backend.open())
    base = await store.create_conversation(conversation("c", ["a", "b"]))
    renamed = rules.set_title(base, "a", "new", 2)
    await store.save_conversation(renamed, expected_version=1)
    stale = rules.add_members(base, "a", ["z"], 3)
    with pytest.raises(VersionConflict):
        await (await store_backend.open()).save_conversation(stale, expected_version=1)
    assert await store.get_conversation("c") == renamed
    logged, _ = await store.sync_log("c", 0, 10)
    assert [(e.event_seq, e.event) for e in logged] == [(1, "conversation.updated"),
                                                        (2, "conversation.updated")]


async def test_pipeline_batches_are_idempotent(store_backend) -> None:
    store: Store = (await store_backend.open())
    await store.create_conversation(conversation("c", ["alice", "bob"]))
    batch = sent_batch("c", range(1, 6))
    await store.write_pipeline_batch(batch)
    await (await store_backend.open()).write_pipeline_batch(batch)  # replayed by another consumer
    history, more = await store.history("c", None, None, 50)
    assert [s.message.seq for s in history] == [1, 2, 3, 4, 5] and more is False
    logged, _ = await store.sync_log("c", 1, 50)
    assert [e.event for e in logged] == ["message.new"] * 5
    extras = (await store.conversation_extras(["c"], "bob"))["c"]
    assert extras.activity.last_seq == 5 and extras.activity.last_event_seq == 6
    assert extras.activity.last_message_at == "2026-01-01T00:00:05.000Z"
    assert extras.unread_count == 5
    assert (await store.conversation_extras(["c"], "alice"))["c"].unread_count == 0


async def test_changed_messages_replace_their_state(store_backend) -> None:
    store: Store = (await store_backend.open())
    await store.create_conversation(conversation("c", ["alice", "bob"]))
    await store.write_pipeline_batch(sent_batch("c", range(1, 3)))
    original = (await store.get_messages(["c-m1"]))["c-m1"]
    tomb = rules.apply_change(original, rules.MessageChange("delete", "alice", 9, T0))
    batch = PipelineBatch(changed_messages=[tomb],
                          events=[LoggedEvent("c", 9, "message.deleted", "c-m1")],
                          activity=[ActivityMark("c", 0, 9, None)])
    await store.write_pipeline_batch(batch)
    assert (await store.get_messages(["c-m1", "nope"])) == {"c-m1": tomb}
    assert (await store.conversation_extras(["c"], "bob"))["c"].unread_count == 1, \
        "tombstones are not unread"
    extras = (await store.conversation_extras(["c"], "bob"))["c"]
    assert extras.activity.last_event_seq == 9 and extras.activity.last_seq == 2


async def test_history_pages_in_both_directions(store_backend) -> None:
    store: Store = (await store_backend.open())
    await store.create_conversation(conversation("c", ["alice"]))
    await store.write_pipeline_batch(sent_batch("c", range(1, 11)))
    newest, more = await store.history("c", None, None, 3)
    assert [s.message.seq for s in newest] == [8, 9, 10] and more is True
    older, more = await store.history("c", 8, None, 3)
    assert [s.message.seq for s in older] == [5, 6, 7] and more is True
    first, more = await store.history("c", 3, None, 5)
    assert [s.message.seq for s in first] == [1, 2] and more is False
    after, more = await store.history("c", None, 2, 3)
    assert [s.message.seq for s in after] == [3, 4, 5] and more is True
    tail, more = await store.history("c", None, 8, 5)
    assert [s.message.seq for s in tail] == [9, 10] and more is False
    window, _ = await store.history("c", 6, 2, 10)
    assert [s.message.seq for s in window] == [3, 4, 5]


async def test_sync_log_pages_ascending(store_backend) -> None:
    store: Store = (await store_backend.open())
    await store.create_conversation(conversation("c", ["alice"]))
    await store.write_pipeline_batch(sent_batch("c", range(1, 8)))
    page, more = await store.sync_log("c", 0, 4)
    assert [e.event_seq for e in page] == [1, 2, 3, 4] and more is True
    page, more = await store.sync_log("c", 4, 10)
    assert [e.event_seq for e in page] == [5, 6, 7, 8] and more is False


async def test_listing_is_newest_activity_first_with_a_cursor(store_backend) -> None:
    store: Store = (await store_backend.open())
    for i in range(5):
        await store.create_conversation(conversation(f"c{i}", ["alice", "bob"]))
    await store.create_conversation(conversation("elsewhere", ["bob", "carol"]))
    await store.write_pipeline_batch(sent_batch("c2", range(1, 2)))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.list_conversations("app", "alice", 2, cursor)
        seen += [c.id for c in page]
        if cursor is None:
            break
    assert seen[0] == "c2"
    assert sorted(seen) == ["c0", "c1", "c2", "c3", "c4"]
    assert await store.related_users("app", "alice", None) == {"alice", "bob"}
    assert await store.related_users("app", "alice", ["carol", "bob"]) == {"bob"}
    assert await store.related_users("app", "alice", []) == set()


async def test_receipts_only_move_forward(store_backend) -> None:
    store: Store = (await store_backend.open())
    await store.create_conversation(conversation("c", ["alice", "bob"]))
    await store.write_pipeline_batch(sent_batch("c", range(1, 6)))
    moved = await store.write_pipeline_batch(PipelineBatch(receipts=[
        ReceiptMark("c", "bob", "read", 3), ReceiptMark("c", "bob", "delivered", 5)]))
    assert len(moved) == 2
    again = await store.write_pipeline_batch(PipelineBatch(receipts=[
        ReceiptMark("c", "bob", "read", 3), ReceiptMark("c", "bob", "read", 2)]))
    assert again == []
    extras = (await store.conversation_extras(["c"], "bob"))["c"]
    assert extras.read_marks == {"bob": 3} and extras.unread_count == 2
