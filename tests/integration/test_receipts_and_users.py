"""Receipts, read marks and unread counts across replicas, and the small lookups ``user.get``
and ``ping`` (PROTOCOL.md §2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from tests.chatclient import Client, Cluster, group, poll
from tests.integration.conftest import Connect

T = TypeVar("T")



async def send(client: Client, cid: str, text: str) -> dict[str, Any]:
    data = await client.ok("message.send", {"conversation_id": cid, "client_msg_id": text,
                                            "text": text})
    return dict(data["message"])



async def get(client: Client, cid: str) -> dict[str, Any]:
    return dict((await client.ok("conversation.get", {"conversation_id": cid}))["conversation"])


async def listed(client: Client, cid: str) -> dict[str, Any]:
    conversations = (await client.ok("conversation.list", {}))["conversations"]
    (found,) = [c for c in conversations if c["id"] == cid]
    return dict(found)


@asynccontextmanager
async def signed_in(cluster: Cluster, user: str, display_name: str,
                    replica: int) -> AsyncIterator[Client]:
    tokens = await cluster.token(user, display_name=display_name)
    client = await Client.connect(cluster.socket_urls[replica], tokens["access_token"], user)
    try:
        yield client
    finally:
        await client.close()


# -- receipt events ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["read", "delivered"])
async def test_a_receipt_reaches_every_member_and_the_readers_other_connections(
        connect: Connect, users, kind: str) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    b2 = await connect(bob, 0)  # the reader's other connection
    c = await connect(carol, 1)
    cid = await group(a, bob, carol)
    for text in ("one", "two", "three"):
        await send(a, cid, text)

    assert await b.ok(f"receipt.{kind}", {"conversation_id": cid, "seq": 2}) == {}

    expected = {"conversation_id": cid, "user_id": bob, "seq": 2, "kind": kind}
    for other in (a, b2, c):
        frame = await other.event("receipt", conversation_id=cid)
        assert frame["data"] == expected
    await b.no_event("receipt")


async def test_a_receipt_that_does_not_move_the_mark_forward_sends_nothing(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    cid = await group(a, bob)
    for text in ("one", "two", "three", "four"):
        await send(a, cid, text)

    await b.ok("receipt.read", {"conversation_id": cid, "seq": 3})
    assert (await a.event("receipt", kind="read"))["data"]["seq"] == 3

    assert await b.ok("receipt.read", {"conversation_id": cid, "seq": 2}) == {}
    assert await b.ok("receipt.read", {"conversation_id": cid, "seq": 3}) == {}
    await a.no_event("receipt", within=1)
    await b.ok("receipt.read", {"conversation_id": cid, "seq": 4})
    frame = await a.event("receipt")  # the next receipt event is the one that moved
    assert frame["data"] == {"conversation_id": cid, "user_id": bob, "seq": 4, "kind": "read"}

    # the delivered mark is kept apart from the read mark, with the same rule
    await b.ok("receipt.delivered", {"conversation_id": cid, "seq": 4})
    assert (await a.event("receipt"))["data"]["kind"] == "delivered"
    await b.ok("receipt.delivered", {"conversation_id": cid, "seq": 1})
    await a.no_event("receipt", within=1)
    got = await get(a, cid)
    assert got["read_marks"][bob] == 4


async def test_a_receipt_must_name_a_message_of_a_conversation_one_is_in(
        connect: Connect, users) -> None:
    alice, bob, eve = users("alice", "bob", "eve")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    e = await connect(eve, 1)
    cid = await group(a, bob)
    await send(a, cid, "only")

    for kind in ("read", "delivered"):
        err = await b.error(f"receipt.{kind}", {"conversation_id": cid, "seq": 2})
        assert err["code"] == "bad_request", kind
        err = await e.error(f"receipt.{kind}", {"conversation_id": cid, "seq": 1})
        assert err["code"] == "not_found", kind
    await a.no_event("receipt", within=1)
    assert (await get(a, cid))["read_marks"] == {alice: 0, bob: 0}


# -- read marks and unread counts --------------------------------------------------------------


async def test_read_marks_and_unread_counts_follow_receipts_and_skip_tombstones(
        connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    c = await connect(carol, 1)
    cid = await group(a, bob, carol)
    await send(a, cid, "m1")
    m2 = await send(a, cid, "m2")
    await send(a, cid, "m3")
    await send(c, cid, "m4")
    await a.ok("message.delete", {"message_id": m2["id"]})

    # bob: m1, m3 (alice) and m4 (carol) are unread; m2 is a tombstone
    before = await poll(lambda: get(b, cid),
                        lambda v: v["last_seq"] == 4 and v["unread_count"] == 3)
    assert before["unread_count"] == 3
    assert before["last_read_seq"] == 0
    assert before["last_seq"] == 4

    await b.ok("receipt.read", {"conversation_id": cid, "seq": 3})

    after = await poll(lambda: get(b, cid), lambda v: v["last_read_seq"] == 3)
    assert after["last_read_seq"] == 3
    assert after["unread_count"] == 1  # only carol's m4 is above the mark
    assert after["read_marks"] == {alice: 0, bob: 3, carol: 0}
    in_list = await listed(b, cid)
    assert in_list["last_read_seq"] == 3 and in_list["unread_count"] == 1

    # the sender (other replica) sees bob's mark; her own messages are never unread to her
    seen_by_alice = await get(a, cid)
    assert seen_by_alice["read_marks"] == {alice: 0, bob: 3, carol: 0}
    assert seen_by_alice["last_read_seq"] == 0
    assert seen_by_alice["unread_count"] == 1  # carol's m4
    seen_by_carol = await listed(c, cid)
    assert seen_by_carol["unread_count"] == 2  # alice's m1 and m3

    await b.ok("receipt.read", {"conversation_id": cid, "seq": 4})
    done = await poll(lambda: get(b, cid), lambda v: v["last_read_seq"] == 4)
    assert done["last_read_seq"] == 4 and done["unread_count"] == 0


# -- user.get ----------------------------------------------------------------------------------


async def test_user_get_shows_display_names_of_the_caller_and_people_sharing_a_conversation(
        cluster: Cluster, users) -> None:
    alice, bob, eve, ghost = users("alice", "bob", "eve", "ghost")
    async with (signed_in(cluster, alice, "Alice Liddell", 0) as a,
                signed_in(cluster, bob, "Bob Builder", 1) as b,
                signed_in(cluster, eve, "Eve Stranger", 1) as e):
        await group(a, bob, ghost)  # ghost has never signed in

        got = (await a.ok("user.get", {"users": [alice, bob, eve, ghost]}))["users"]
        assert got == {alice: {"display_name": "Alice Liddell"},
                       bob: {"display_name": "Bob Builder"},
                       ghost: {"display_name": None}}

        from_bob = (await b.ok("user.get", {"users": [alice, eve]}))["users"]
        assert from_bob == {alice: {"display_name": "Alice Liddell"}}
        from_eve = (await e.ok("user.get", {"users": [alice, bob, eve]}))["users"]
        assert from_eve == {eve: {"display_name": "Eve Stranger"}}

        err = await a.error("user.get", {"users": [f"u{i}" for i in range(101)]})
        assert err["code"] == "bad_request"


# -- ping --------------------------------------------------------------------------------------


async def test_ping_answers_the_server_time(connect: Connect, users) -> None:
    (alice,) = users("alice")
    for replica in (0, 1):
        a = await connect(alice, replica)
        answer = await a.ok("ping", {})
        assert set(answer) == {"server_time"}
        assert answer["server_time"].endswith("Z")
        server_time = datetime.fromisoformat(answer["server_time"])
        assert abs((datetime.now(UTC) - server_time).total_seconds()) < 5
