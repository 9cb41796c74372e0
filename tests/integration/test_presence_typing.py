"""Typing indicators and presence across replicas (PROTOCOL.md §2, events ``typing`` and
``presence``, op ``presence.get``)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from tests.chatclient import group
from tests.integration.conftest import Connect

TYPING_TIMEOUT_S = 6.0  # the contract: typing false when 6 s pass without a new typing.start
# Presence events are sent at most once per 5 s per user: an offline event right after an
# online one may be held until that window ends.
PRESENCE_WAIT_S = 12.0
PRESENCE_MIN_INTERVAL_S = 5.0



def assert_timestamp(value: Any) -> None:
    assert isinstance(value, str) and value.endswith("Z"), value
    datetime.fromisoformat(value)


# -- typing ------------------------------------------------------------------------------------


async def test_typing_start_and_stop_reach_the_other_members_but_not_the_typing_connection(
        connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    a2 = await connect(alice, 1)  # the typist's other connection
    b = await connect(bob, 1)
    c = await connect(carol, 0)
    cid = await group(a, bob, carol)

    assert await a.ok("typing.start", {"conversation_id": cid}) == {}

    for other in (b, c, a2):
        frame = await other.event("typing", conversation_id=cid)
        assert frame["data"] == {"conversation_id": cid, "user_id": alice, "typing": True}
    await a.no_event("typing")

    assert await a.ok("typing.stop", {"conversation_id": cid}) == {}

    for other in (b, c, a2):
        frame = await other.event("typing", conversation_id=cid)
        assert frame["data"] == {"conversation_id": cid, "user_id": alice, "typing": False}
    await a.no_event("typing")


async def test_typing_ends_by_itself_six_seconds_after_the_last_start(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    cid = await group(a, bob)

    await a.ok("typing.start", {"conversation_id": cid})
    started = time.monotonic()
    assert (await b.event("typing", user_id=alice))["data"]["typing"] is True

    frame = await b.event("typing", timeout=10, user_id=alice)
    elapsed = time.monotonic() - started

    assert frame["data"] == {"conversation_id": cid, "user_id": alice, "typing": False}
    assert TYPING_TIMEOUT_S - 1 <= elapsed <= TYPING_TIMEOUT_S + 3, elapsed
    await b.no_event("typing", within=1)


async def test_a_repeated_typing_start_keeps_typing_on_without_a_new_event(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 1)
    b = await connect(bob, 0)
    cid = await group(a, bob)
    await a.ok("typing.start", {"conversation_id": cid})
    assert (await b.event("typing", user_id=alice))["data"]["typing"] is True

    await asyncio.sleep(3)
    await a.ok("typing.start", {"conversation_id": cid})  # still typing
    restarted = time.monotonic()

    await b.no_event("typing", within=1)  # the others know already
    frame = await b.event("typing", timeout=10, user_id=alice)
    elapsed = time.monotonic() - restarted
    assert frame["data"]["typing"] is False
    assert TYPING_TIMEOUT_S - 1 <= elapsed <= TYPING_TIMEOUT_S + 3, elapsed


async def test_a_non_member_cannot_type_in_a_conversation(connect: Connect, users) -> None:
    alice, bob, eve = users("alice", "bob", "eve")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    e = await connect(eve, 1)
    cid = await group(a, bob)

    for op in ("typing.start", "typing.stop"):
        assert (await e.error(op, {"conversation_id": cid}))["code"] == "not_found", op
    assert (await e.error("typing.start", {"conversation_id": "c_nope"}))["code"] == "not_found"
    await b.no_event("typing")
    await a.no_event("typing")


# -- presence events ---------------------------------------------------------------------------


async def test_presence_goes_to_online_users_sharing_a_conversation_and_no_one_else(
        connect: Connect, users) -> None:
    alice, bob, eve = users("alice", "bob", "eve")
    a = await connect(alice, 0)
    e = await connect(eve, 0)  # online, but shares no conversation with bob
    await group(a, bob)  # bob has never signed in yet

    b = await connect(bob, 1)  # bob's first connection

    frame = await a.event("presence", user_id=bob)
    assert frame["data"] == {"user_id": bob, "online": True, "last_seen": None}
    assert "event_seq" not in frame

    await b.close()  # bob's last connection

    frame = await a.event("presence", timeout=PRESENCE_WAIT_S, user_id=bob)
    assert frame["data"]["online"] is False
    assert set(frame["data"]) == {"user_id", "online", "last_seen"}
    assert_timestamp(frame["data"]["last_seen"])
    await e.no_event("presence", within=0.5)


async def test_presence_counts_a_user_online_until_the_last_connection_closes(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 1)
    await group(a, bob)

    b1 = await connect(bob, 1)
    assert (await a.event("presence", user_id=bob))["data"]["online"] is True
    b2 = await connect(bob, 0)  # a second connection, on the other replica
    await a.no_event("presence", within=1, user_id=bob)

    await b1.close()  # bob is still online on the other replica
    await a.no_event("presence", within=1, user_id=bob)
    got = await a.ok("presence.get", {"users": [bob]})
    assert got["presence"][bob] == {"online": True, "last_seen": None}

    await b2.close()
    frame = await a.event("presence", timeout=PRESENCE_WAIT_S, user_id=bob)
    assert frame["data"]["online"] is False
    assert_timestamp(frame["data"]["last_seen"])
    await a.no_event("presence", within=1, user_id=bob)  # one event, not one per connection


# -- presence.get ------------------------------------------------------------------------------


async def test_presence_get_answers_for_the_caller_and_users_sharing_a_conversation(
        connect: Connect, users) -> None:
    alice, bob, carol, eve = users("alice", "bob", "carol", "eve")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    await connect(eve, 1)  # online, but a stranger to alice
    await group(a, bob, carol)  # carol has never signed in

    got = (await a.ok("presence.get", {"users": [alice, bob, carol, eve]}))["presence"]

    assert set(got) == {alice, bob, carol}
    assert got[alice] == {"online": True, "last_seen": None}
    assert got[bob] == {"online": True, "last_seen": None}
    assert got[carol]["online"] is False

    await b.close()
    deadline = time.monotonic() + 3
    while True:
        got = (await a.ok("presence.get", {"users": [bob]}))["presence"]
        if not got[bob]["online"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert got[bob]["online"] is False
    assert_timestamp(got[bob]["last_seen"])

    assert (await a.ok("presence.get", {"users": [eve]}))["presence"] == {}
    assert (await a.ok("presence.get", {"users": []}))["presence"] == {}
    err = await a.error("presence.get", {"users": [f"u{i}" for i in range(101)]})
    assert err["code"] == "bad_request"


async def test_presence_events_of_one_user_are_5_s_apart_even_across_replicas(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    await group(a, bob)
    b1 = await connect(bob, 1)
    b2 = await connect(bob, 0)
    assert (await a.event("presence", user_id=bob))["data"]["online"] is True
    online_at = time.monotonic()

    await b1.close()
    await b2.close()  # the last connection closes on the other replica

    frame = await a.event("presence", timeout=PRESENCE_WAIT_S, user_id=bob)
    assert frame["data"]["online"] is False
    gap = time.monotonic() - online_at
    assert gap >= PRESENCE_MIN_INTERVAL_S - 0.5, f"offline {gap:.3f} s after online"
