"""What the Store contract cannot see of the MongoDB adapter: its indexes, the round trips of a
pipeline batch, the plan of a history page, failing fast, and that it answers exactly like the
embedded store on the same workload. Runs when CHAT_STORE_URL is set (scripts/services up)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import monitoring

from chatcluster.adapters.embedded.store import SqliteStore
from chatcluster.adapters.mongodb.store import INDEXES, MongoStore
from chatcluster.domain import rules
from chatcluster.domain.errors import Unavailable, VersionConflict
from chatcluster.domain.model import ConversationState, Message, MessageState, Session
from chatcluster.ports.store import ActivityMark, LoggedEvent, PipelineBatch, ReceiptMark, Store

pytestmark = pytest.mark.skipif(not os.environ.get("CHAT_STORE_URL"),
                                reason="CHAT_STORE_URL unset: run scripts/services up")

T0 = "2026-01-01T00:00:00.000Z"


class Commands(monitoring.CommandListener):
    """Counts the commands the client sends: one command is one round trip."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        self.names.clear()
        self.commands.clear()


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def mongo(commands: Commands) -> AsyncIterator[MongoStore]:
    """A store on a fresh database of its own, dropped afterwards."""
    store = MongoStore(os.environ["CHAT_STORE_URL"], database=f"chat_test_{uuid.uuid4().hex[:12]}",
                       event_listeners=[commands])
    await store.start()
    yield store
    await store.client.drop_database(store.db.name)
    await store.close()


def conversation(cid: str, members: list[str], *, direct: bool = False,
                 version: int = 1) -> ConversationState:
    return rules.new_conversation(conversation_id=cid, app_id="app", creator=members[0],
                                  type="direct" if direct else "group", members=members[1:],
                                  title=None, now=T0, event_seq=version)


def message(cid: str, seq: int, sender: str = "alice") -> MessageState:
    at = f"2026-01-01T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}.000Z"
    m = Message(id=f"{cid}-m{seq}", conversation_id=cid, seq=seq, sender_id=sender,
                text=f"t{seq}", client_msg_id=f"k{seq}", created_at=at)
    return MessageState(app_id="app", message=m, text_event_seq=seq + 1, last_event_seq=seq + 1)


def sent_batch(cid: str, seqs: range, sender: str = "alice") -> PipelineBatch:
    states = [message(cid, s, sender) for s in seqs]
    return PipelineBatch(
        new_messages=states,
        events=[LoggedEvent(cid, s.last_event_seq, "message.new", s.message.id) for s in states],
        activity=[ActivityMark(cid, seqs[-1], seqs[-1] + 1, states[-1].message.created_at)])


async def counts(store: MongoStore) -> dict[str, int]:
    return {name: await store.db[name].count_documents({})
            for name in ("conversations", "messages", "sync_log", "receipts")}


# -- indexes ------------------------------------------------------------------------------------
async def test_indexes_exist_with_their_keys_and_uniqueness(mongo: MongoStore) -> None:
    for collection, models in INDEXES.items():
        listed = {ix["name"]: ix async for ix in await mongo.db[collection].list_indexes()}
        for model in models:
            spec = model.document
            assert spec["name"] in listed, f"{collection}.{spec['name']} missing"
            ix = listed[spec["name"]]
            assert list(ix["key"].items()) == list(spec["key"].items())
            assert bool(ix.get("unique", False)) == bool(spec.get("unique", False))
    uniques = {(c, ix["name"]) for c in INDEXES
               async for ix in await mongo.db[c].list_indexes() if ix.get("unique")}
    assert {("conversations", "conversations_direct"), ("messages", "messages_by_seq"),
            ("messages", "messages_by_client_id"), ("sync_log", "sync_log_by_seq"),
            ("receipts", "receipts_by_user")} <= uniques


async def test_a_second_instance_sets_up_on_existing_indexes(mongo: MongoStore) -> None:
    # FerretDB 1.24 drops the connection if one createIndexes names several existing indexes;
    # the adapter creates only missing ones, one per command.
    again = MongoStore(os.environ["CHAT_STORE_URL"], database=mongo.db.name)
    try:
        await again.start()
        await again.ping()
    finally:
        await again.close()


# -- idempotency and round trips ----------------------------------------------------------------
async def test_a_replayed_batch_changes_nothing(mongo: MongoStore) -> None:
    await mongo.create_conversation(conversation("c", ["alice", "bob"]))
    batch = sent_batch("c", range(1, 51))
    tomb = rules.apply_change(batch.new_messages[0],
                              rules.MessageChange("delete", "alice", 99, T0))
    batch.changed_messages = [tomb]
    batch.events.append(LoggedEvent("c", 99, "message.deleted", tomb.message.id))
    batch.receipts = [ReceiptMark("c", "bob", "read", 10)]
    assert await mongo.write_pipeline_batch(batch) == batch.receipts
    before = await counts(mongo)
    state_before = await mongo.db["conversations"].find_one({"_id": "c"})
    assert await mongo.write_pipeline_batch(batch) == [], "nothing moves on a replay"
    assert await counts(mongo) == before == {"conversations": 1, "messages": 50,
                                             "sync_log": 52, "receipts": 1}
    assert await mongo.db["conversations"].find_one({"_id": "c"}) == state_before
    assert (await mongo.get_messages([tomb.message.id]))[tomb.message.id] == tomb


async def test_a_batch_of_500_messages_takes_a_few_round_trips(
        mongo: MongoStore, commands: Commands) -> None:
    await mongo.create_conversation(conversation("c", ["alice", "bob"]))
    commands.clear()
    await mongo.write_pipeline_batch(sent_batch("c", range(1, 501)))
    assert commands.names == ["insert", "insert", "update"], commands.names
    assert (await counts(mongo))["messages"] == 500

    # Changes and receipts for 500 messages/users: still a handful, not one per item.
    changed = [rules.apply_change(message("c", s), rules.MessageChange(
        "edit", "alice", 1000 + s, T0, text="edited")) for s in range(1, 501)]
    commands.clear()
    moved = await mongo.write_pipeline_batch(PipelineBatch(
        changed_messages=changed,
        events=[LoggedEvent("c", 1000 + s, "message.updated", f"c-m{s}") for s in range(1, 501)],
        activity=[ActivityMark("c", 0, 1500, None)],
        receipts=[ReceiptMark("c", f"u{i}", "read", 5) for i in range(500)]))
    assert len(moved) == 500
    # One read of the receipts, one insert of the new ones, then updates: on MongoDB one
    # command per part; on FerretDB in commands of max_updates_per_command (see the adapter).
    per = mongo.max_updates_per_command or 500
    updates = -(-500 // per) * 2 + 1  # changed messages, receipts, activity
    assert sorted(commands.names) == sorted(
        ["insert", "find", "insert"] + ["update"] * updates), commands.names
    assert (await mongo.history("c", None, None, 1))[0][0].message.text == "edited"


async def test_conversation_extras_reads_in_a_few_round_trips(
        mongo: MongoStore, commands: Commands) -> None:
    ids = [f"c{i}" for i in range(20)]
    for cid in ids:
        await mongo.create_conversation(conversation(cid, ["alice", "bob"]))
        await mongo.write_pipeline_batch(sent_batch(cid, range(1, 4)))
    commands.clear()
    extras = await mongo.conversation_extras(ids, "bob")
    assert {e.unread_count for e in extras.values()} == {3}
    assert sorted(commands.names) == ["aggregate", "find", "find"], commands.names


# -- query plans --------------------------------------------------------------------------------
def _plan_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _plan_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _plan_nodes(value)


async def test_history_asks_for_one_range_of_the_seq_index(
        mongo: MongoStore, commands: Commands) -> None:
    await mongo.create_conversation(conversation("c", ["alice"]))
    await mongo.write_pipeline_batch(sent_batch("c", range(1, 21)))
    for before, after, direction in ((None, None, -1), (10, None, -1), (None, 5, 1), (15, 5, 1)):
        commands.clear()
        await mongo.history("c", before, after, 5)
        (find,) = [c for c in commands.commands if "find" in c]
        assert find["find"] == "messages"
        # Equality on conversation_id, a range on seq, sorted by seq: the messages_by_seq prefix.
        assert set(find["filter"]) <= {"conversation_id", "seq"}
        assert find["filter"]["conversation_id"] == "c"
        assert dict(find["sort"]) == {"seq": direction}


async def test_history_uses_the_seq_index_per_explain(mongo: MongoStore) -> None:
    await mongo.create_conversation(conversation("c", ["alice"]))
    await mongo.write_pipeline_batch(sent_batch("c", range(1, 21)))
    plan = await mongo.messages.find({"conversation_id": "c", "seq": {"$lt": 10}}).sort(
        "seq", -1).limit(6).explain()
    info = await mongo.db.command("buildInfo")
    if "ferretdbVersion" in info:
        # FerretDB v1 on SQLite pushes down only _id equality; every other filter is a scan,
        # whatever indexes exist. Record that, so a FerretDB that starts using them is noticed.
        assert plan.get("filterPushdown") is False and plan.get("sortPushdown") is False
        pytest.skip(f"FerretDB {info['ferretdbVersion']} cannot use secondary indexes for "
                    f"queries (explain: {plan['queryPlanner']}); checked on MongoDB only")
    scans = [n for n in _plan_nodes(plan["queryPlanner"]["winningPlan"])
             if n.get("stage") == "IXSCAN"]
    assert [n["indexName"] for n in scans] == ["messages_by_seq"], plan
    assert not any(n.get("stage") == "SORT" for n in _plan_nodes(plan["queryPlanner"]))


# -- conversations without transactions ---------------------------------------------------------
async def test_groups_never_collide_on_the_direct_key(mongo: MongoStore) -> None:
    # FerretDB would accept two documents *missing* a unique field; groups store "g:<id>".
    for i in range(3):
        await mongo.create_conversation(conversation(f"g{i}", ["a", "b"]))
    first = await mongo.create_conversation(conversation("d1", ["a", "b"], direct=True))
    second = await mongo.create_conversation(conversation("d2", ["b", "a"], direct=True))
    assert second == first
    keys = await mongo.db["conversations"].distinct("direct_key")
    assert sorted(keys) == ["1:a|b", "g:g0", "g:g1", "g:g2"]
    logged, _ = await mongo.sync_log("d2", 0, 10)
    assert logged == [], "the loser's speculative sync-log entry is removed"


async def test_a_lost_compare_and_set_leaves_no_log_entry(mongo: MongoStore) -> None:
    base = await mongo.create_conversation(conversation("c", ["a", "b"]))
    await mongo.save_conversation(rules.set_title(base, "a", "one", 2), expected_version=1)
    with pytest.raises(VersionConflict):
        await mongo.save_conversation(rules.set_title(base, "a", "two", 3), expected_version=1)
    logged, _ = await mongo.sync_log("c", 0, 10)
    assert [e.event_seq for e in logged] == [1, 2]
    doc = await mongo.db["conversations"].find_one({"_id": "c"})
    assert doc is not None and doc["version"] == 2 and doc["last_event_seq"] == 2


async def test_an_unreachable_server_is_unavailable_fast() -> None:
    # Port 9 (discard) on loopback: nothing listens, connections are refused.
    store = MongoStore("mongodb://127.0.0.1:9/chatcluster")
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable):
            await store.get_conversation("c")
    finally:
        await store.close()
    assert time.monotonic() - started < 6, "server selection gives up after about 3 s"
    with pytest.raises(Unavailable):
        await store.get_app("app")  # closed


async def test_the_database_comes_from_the_url_unless_given() -> None:
    for args, name in ((("mongodb://127.0.0.1:9/from_url",), "from_url"),
                       (("mongodb://127.0.0.1:9/from_url", "given"), "given"),
                       (("mongodb://127.0.0.1:9/",), "chatcluster")):
        store = MongoStore(*args)
        assert store.db.name == name
        await store.close()


# -- same answers as the embedded store ---------------------------------------------------------
async def _workload(store: Store) -> list[Any]:
    """Drive one store through a mixed workload; return everything it answered."""
    out: list[Any] = []
    users = ["alice", "bob", "carol", "dave"]
    for u in users:
        await store.ensure_user("app", u, u.title() if u != "dave" else None, T0)
    out.append(await store.display_names("app", [*users, "zed"]))
    convs = [await store.create_conversation(conversation(f"c{i}", users[: 2 + i % 3]))
             for i in range(6)]
    convs.append(await store.create_conversation(conversation("d", ["carol", "dave"],
                                                              direct=True)))
    out.append(await store.create_conversation(conversation("d2", ["dave", "carol"],
                                                            direct=True)))
    renamed = rules.set_title(convs[1], "alice", "renamed", 50)
    await store.save_conversation(renamed, expected_version=convs[1].version)
    for i, c in enumerate(convs):
        if i % 2 == 0:
            await store.write_pipeline_batch(sent_batch(c.id, range(1, 4 + i),
                                                        sender=c.members[-1]))
    stored = (await store.get_messages(["c0-m2"]))["c0-m2"]
    tomb = rules.apply_change(stored, rules.MessageChange("delete", stored.message.sender_id,
                                                          90, T0))
    await store.write_pipeline_batch(PipelineBatch(
        changed_messages=[tomb], events=[LoggedEvent("c0", 90, "message.deleted", "c0-m2")],
        activity=[ActivityMark("c0", 0, 90, None)]))
    for marks in ([ReceiptMark("c0", "alice", "read", 2), ReceiptMark("c0", "alice", "read", 3),
                   ReceiptMark("c0", "bob", "delivered", 3)],
                  [ReceiptMark("c0", "alice", "read", 3), ReceiptMark("c2", "bob", "read", 9),
                   ReceiptMark("c2", "bob", "read", 1), ReceiptMark("c4", "carol", "delivered", 0)],
                  [ReceiptMark("c0", "bob", "read", 1)]):
        out.append(await store.write_pipeline_batch(PipelineBatch(receipts=marks)))
    ids = [c.id for c in convs]
    for user in users:
        out.append(await store.conversation_extras([*ids, "missing"], user))
        page: list[str] = []
        cursor = None
        while True:
            states, cursor = await store.list_conversations("app", user, 2, cursor)
            page += [s.id for s in states]
            if cursor is None:
                break
        out.append(page)
        out.append(sorted(await store.related_users("app", user, None)))
        out.append(sorted(await store.related_users("app", user, ["carol", "zed"])))
    for c in convs:
        out.append(await store.history(c.id, None, None, 3))
        out.append(await store.history(c.id, 3, 1, 10))
        out.append(await store.sync_log(c.id, 0, 4))
        out.append(await store.get_conversation(c.id))
    return out


async def test_answers_like_the_embedded_store(mongo: MongoStore, tmp_path: Path) -> None:
    embedded = SqliteStore(tmp_path)
    try:
        expected = await _workload(embedded)
    finally:
        await embedded.close()
    got = await _workload(mongo)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a == b, f"answer {i} differs"


async def test_revocations_are_polled_from_a_small_log_never_from_every_session(
        mongo: MongoStore, commands: Commands) -> None:
    """FerretDB v1 does not use the sessions' revoked_at index: replicas' one-second poll would
    scan every session ever made. It reads the revocation log, pruned past REVOCATION_LOG_S."""
    for i in range(3):
        await mongo.create_session(Session(id=f"s{i}", app_id="app", user_id="u",
                                           refresh_jti="j", created_at=T0))
    await mongo.revoke_session("s0", "2026-01-01T00:00:00.000Z")
    await mongo.revoke_session("s1", "2026-01-01T03:00:00.000Z")
    await mongo.revoke_session("s1", "2026-01-01T03:00:09.000Z")  # again: the first time stays
    commands.clear()
    assert await mongo.revoked_sessions_since("2026-01-01T02:59:55.000Z") == ["s1"]
    assert [c["find"] for c in commands.commands if "find" in c] == ["revocations"]
    assert [d["_id"] async for d in mongo.revocations.find({})] == ["s1"], "s0's entry pruned"
    assert (await mongo.get_session("s0")).revoked_at == "2026-01-01T00:00:00.000Z"
    assert (await mongo.get_session("s1")).revoked_at == "2026-01-01T03:00:00.000Z"
    assert (await mongo.get_session("s2")).revoked_at is None
