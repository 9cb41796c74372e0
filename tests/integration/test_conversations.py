"""Conversations across replicas: create, list, get, update, membership and roles, and the
``conversation.updated`` events they cause (PROTOCOL.md §2)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from tests.chatclient import Client, poll
from tests.integration.conftest import Connect

T = TypeVar("T")

CONVERSATION_FIELDS = {
    "id", "type", "title", "members", "owner", "admins", "created_at", "last_seq",
    "last_event_seq", "last_message_at", "last_read_seq", "unread_count", "read_marks"}


async def group(owner: Client, *members: str, title: str = "g") -> dict[str, Any]:
    data = await owner.ok("conversation.create",
                          {"type": "group", "members": list(members), "title": title})
    return dict(data["conversation"])


async def direct(caller: Client, other: str) -> dict[str, Any]:
    data = await caller.ok("conversation.create", {"type": "direct", "members": [other]})
    return dict(data["conversation"])



async def updated_until(client: Client, done: Callable[[dict[str, Any]], bool],
                        timeout: float = 5) -> dict[str, Any]:
    """Consume ``conversation.updated`` events until one shows a conversation where ``done``
    holds; that frame."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await client.event("conversation.updated",
                                   timeout=max(0.01, deadline - time.monotonic()))
        if done(frame["data"]["conversation"]):
            return frame


async def list_ids(client: Client, **params: Any) -> list[str]:
    data = await client.ok("conversation.list", params)
    return [c["id"] for c in data["conversations"]]


# -- create ------------------------------------------------------------------------------------


async def test_a_direct_conversation_is_created_once_whoever_asks_on_whichever_replica(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    a2 = await connect(alice, 1)

    first = await direct(a, bob)

    assert first["type"] == "direct"
    assert sorted(first["members"]) == sorted([alice, bob])
    assert first["title"] is None
    for other in (b, a2):  # the creator's other connection is told too
        frame = await other.event("conversation.updated")
        assert frame["data"]["conversation"]["id"] == first["id"]
        assert frame["event_seq"] == first["last_event_seq"]

    again_by_alice = await direct(a, bob)
    again_by_bob = await direct(b, alice)  # the other side, the other replica
    again_elsewhere = await direct(a2, bob)  # the same side, the other replica
    assert again_by_alice["id"] == again_by_bob["id"] == again_elsewhere["id"] == first["id"]
    assert again_by_bob["members"] == first["members"]

    await b.no_event("conversation.updated")  # nothing was created a second time
    assert await list_ids(a) == [first["id"]]
    assert await list_ids(b) == [first["id"]]


async def test_simultaneous_creates_of_one_direct_conversation_agree(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a0, a1 = await connect(alice, 0), await connect(alice, 1)
    b0, b1 = await connect(bob, 0), await connect(bob, 1)

    made = await asyncio.gather(direct(a0, bob), direct(b1, alice), direct(a1, bob),
                                direct(b0, alice))

    assert len({conv["id"] for conv in made}) == 1
    assert await list_ids(a0) == [made[0]["id"]]
    assert await list_ids(b0) == [made[0]["id"]]


async def test_a_direct_conversation_has_exactly_one_other_member(
        connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)

    for members in ([], [alice], [bob, carol]):
        err = await a.error("conversation.create", {"type": "direct", "members": members})
        assert err["code"] == "bad_request", (members, err)
    assert await list_ids(a) == []


async def test_a_group_is_owned_by_its_creator_and_announced_to_its_members(
        connect: Connect, users) -> None:
    alice, bob, carol, ghost = users("alice", "bob", "carol", "ghost")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    c = await connect(carol, 1)

    # duplicates, the creator herself and an id that never signed in
    conv = await group(a, bob, carol, bob, alice, ghost, title="Launch plan")

    assert conv["type"] == "group"
    assert conv["title"] == "Launch plan"
    assert conv["owner"] == alice
    assert conv["admins"] == []
    assert conv["members"][0] == alice
    assert sorted(conv["members"]) == sorted([alice, bob, carol, ghost])
    assert len(conv["members"]) == 4
    for member in (b, c):
        frame = await member.event("conversation.updated")
        seen = frame["data"]["conversation"]
        assert seen["id"] == conv["id"]
        assert seen["title"] == "Launch plan"
        assert seen["owner"] == alice
        assert sorted(seen["members"]) == sorted(conv["members"])
        assert isinstance(frame["event_seq"], int)
        assert frame["event_seq"] == conv["last_event_seq"]
    await a.no_event("conversation.updated")  # the creating connection has the response


async def test_a_conversation_object_has_exactly_the_contract_fields(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)

    conv = await group(a, bob, title="fields")
    fetched = (await a.ok("conversation.get", {"conversation_id": conv["id"]}))["conversation"]
    listed = (await a.ok("conversation.list", {}))["conversations"][0]

    for seen in (conv, fetched, listed):
        assert set(seen) == CONVERSATION_FIELDS
        assert seen["id"] == conv["id"]
        assert seen["last_seq"] == 0
        assert seen["last_message_at"] is None
        assert seen["last_read_seq"] == 0
        assert seen["unread_count"] == 0
        assert seen["read_marks"] == {alice: 0, bob: 0}
        assert isinstance(seen["last_event_seq"], int) and seen["last_event_seq"] >= 1
        assert seen["created_at"].endswith("Z")
        datetime.fromisoformat(seen["created_at"])


async def test_read_marks_are_listed_up_to_100_members_and_null_beyond(
        connect: Connect, users) -> None:
    (alice,) = users("alice")
    a = await connect(alice, 0)
    others = users(*["m"] * 100)

    small = await group(a, *others[:99], title="100 members")
    large = await group(a, *others, title="101 members")

    assert len(small["members"]) == 100
    assert small["read_marks"] == dict.fromkeys(small["members"], 0)
    assert len(large["members"]) == 101
    assert large["read_marks"] is None
    fetched = (await a.ok("conversation.get", {"conversation_id": large["id"]}))["conversation"]
    assert fetched["read_marks"] is None


# -- list --------------------------------------------------------------------------------------


async def test_list_puts_the_conversation_with_the_newest_activity_first(
        connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    created = []
    for title in ("one", "two", "three"):
        created.append((await group(a, bob, carol, title=title))["id"])
        await asyncio.sleep(0.01)
    one, two, three = created
    assert await list_ids(a) == [three, two, one]

    await b.ok("message.send", {"conversation_id": one, "client_msg_id": "x", "text": "up"})

    order = await poll(lambda: list_ids(a), lambda ids: ids[0] == one)
    assert order == [one, three, two]
    top = (await a.ok("conversation.list", {"limit": 1}))["conversations"][0]
    assert top["id"] == one
    assert top["last_seq"] == 1
    assert top["last_message_at"] is not None
    assert await list_ids(b) == [one, three, two]  # the sender's list too, other replica


async def test_list_pages_visit_every_conversation_exactly_once(
        connect: Connect, users) -> None:
    alice, bob, carol, dave = users("alice", "bob", "carol", "dave")
    a = await connect(alice, 1)
    expected = {(await direct(a, bob))["id"], (await direct(a, carol))["id"]}
    for i in range(3):
        expected.add((await group(a, dave, title=f"g{i}"))["id"])

    visited: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 1}
        if cursor is not None:
            params["cursor"] = cursor
        page = await a.ok("conversation.list", params)
        assert len(page["conversations"]) <= 1
        visited += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert len(visited) == len(expected) == 5
    assert set(visited) == expected
    assert visited == await list_ids(a)  # the same order as one big page

    whole = await a.ok("conversation.list", {"limit": 5})
    assert len(whole["conversations"]) == 5
    assert whole["next_cursor"] is None


async def test_list_refuses_a_cursor_that_is_not_even_base64_text(
        connect: Connect, users) -> None:
    (alice,) = users("alice")
    a = await connect(alice, 0)
    await group(a, title="only")

    for cursor in ("garbage!", base64.urlsafe_b64encode(b"\xff\xfe").decode()):
        err = await a.error("conversation.list", {"cursor": cursor})
        assert err["code"] == "bad_request", (cursor, err)


async def test_list_refuses_a_garbage_cursor_that_happens_to_decode(
        connect: Connect, users) -> None:
    (alice,) = users("alice")
    a = await connect(alice, 0)
    await group(a, title="only")

    for cursor in ("%%%", base64.urlsafe_b64encode(b"not|a-cursor").decode(),
                   base64.urlsafe_b64encode(b"hello").decode()):
        frame = await a.request("conversation.list", {"cursor": cursor})
        assert frame["ok"] is False and frame["error"]["code"] == "bad_request", (cursor, frame)


# -- get ---------------------------------------------------------------------------------------


async def test_get_answers_not_found_to_a_non_member(connect: Connect, users) -> None:
    alice, bob, eve = users("alice", "bob", "eve")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    e = await connect(eve, 1)
    conv = await group(a, bob, title="private")

    seen = (await b.ok("conversation.get", {"conversation_id": conv["id"]}))["conversation"]
    assert seen["id"] == conv["id"] and seen["title"] == "private"
    assert (await e.error("conversation.get", {"conversation_id": conv["id"]}))["code"] == \
        "not_found"
    assert (await e.error("conversation.get", {"conversation_id": "c_nope"}))["code"] == \
        "not_found"


# -- update ------------------------------------------------------------------------------------


async def test_the_owner_renames_a_group_and_members_see_it(connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    c = await connect(carol, 0)
    conv = await group(a, bob, carol, title="old")
    created_seq = (await b.event("conversation.updated"))["event_seq"]
    await c.event("conversation.updated")

    renamed = (await a.ok("conversation.update",
                          {"conversation_id": conv["id"], "title": "new"}))["conversation"]

    assert renamed["title"] == "new"
    assert renamed["last_event_seq"] > created_seq
    for member in (b, c):
        frame = await member.event("conversation.updated")
        assert frame["data"]["conversation"]["title"] == "new"
        assert frame["event_seq"] > created_seq
        assert frame["event_seq"] == renamed["last_event_seq"]
    await a.no_event("conversation.updated")
    got = (await b.ok("conversation.get", {"conversation_id": conv["id"]}))["conversation"]
    assert got["title"] == "new"


async def test_a_plain_member_cannot_rename_and_a_direct_has_no_title(
        connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    conv = await group(a, bob, title="kept")
    await b.event("conversation.updated")

    err = await b.error("conversation.update", {"conversation_id": conv["id"], "title": "mine"})
    assert err["code"] == "forbidden"
    got = (await a.ok("conversation.get", {"conversation_id": conv["id"]}))["conversation"]
    assert got["title"] == "kept"
    await a.no_event("conversation.updated")

    dm = await direct(a, bob)
    for caller in (a, b):
        err = await caller.error("conversation.update", {"conversation_id": dm["id"],
                                                         "title": "dm"})
        assert err["code"] == "bad_request"


# -- membership --------------------------------------------------------------------------------


async def test_an_added_member_is_told_and_can_then_send(connect: Connect, users) -> None:
    alice, bob, dave = users("alice", "bob", "dave")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    d = await connect(dave, 1)
    conv = await group(a, bob, title="team")
    await b.event("conversation.updated")
    err = await d.error("message.send", {"conversation_id": conv["id"], "client_msg_id": "0",
                                         "text": "let me in"})
    assert err["code"] == "not_found"

    added = (await a.ok("conversation.add_members",
                        {"conversation_id": conv["id"], "members": [dave]}))["conversation"]

    assert added["members"] == [alice, bob, dave]
    for member in (b, d):
        frame = await member.event("conversation.updated")
        assert frame["data"]["conversation"]["members"] == [alice, bob, dave]
        assert frame["event_seq"] == added["last_event_seq"]
    sent = (await d.ok("message.send", {"conversation_id": conv["id"], "client_msg_id": "1",
                                        "text": "hi all"}))["message"]
    assert sent["sender_id"] == dave
    assert (await a.event("message.new"))["data"]["message"]["id"] == sent["id"]
    assert (await b.event("message.new"))["data"]["message"]["id"] == sent["id"]


async def test_adding_existing_members_changes_nothing(connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    conv = await group(a, bob, carol, title="same")
    await b.event("conversation.updated")

    again = (await a.ok("conversation.add_members",
                        {"conversation_id": conv["id"], "members": [bob, carol, alice]}
                        ))["conversation"]

    assert again["members"] == conv["members"]
    assert again["last_event_seq"] == conv["last_event_seq"]
    await b.no_event("conversation.updated")


async def test_a_removed_member_is_told_and_then_locked_out(connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    c = await connect(carol, 0)
    conv = await group(a, bob, carol, title="club")
    cid = conv["id"]
    await b.event("conversation.updated")
    await c.event("conversation.updated")

    left = (await a.ok("conversation.remove_members",
                       {"conversation_id": cid, "members": [bob]}))["conversation"]

    assert left["members"] == [alice, carol]
    for member in (b, c):  # the removed member is told too
        frame = await member.event("conversation.updated")
        assert frame["data"]["conversation"]["members"] == [alice, carol]
        assert frame["event_seq"] == left["last_event_seq"]
    err = await b.error("message.send", {"conversation_id": cid, "client_msg_id": "1",
                                         "text": "still here?"})
    assert err["code"] == "not_found"
    assert (await b.error("message.history", {"conversation_id": cid}))["code"] == "not_found"
    assert (await b.error("conversation.get", {"conversation_id": cid}))["code"] == "not_found"
    assert cid not in await list_ids(b)
    await c.no_event("message.new")


async def test_the_owner_and_admins_are_protected_from_removal(
        connect: Connect, users) -> None:
    alice, bob, carol, dave = users("alice", "bob", "carol", "dave")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    d = await connect(dave, 0)
    conv = await group(a, bob, carol, dave, title="roles")
    cid = conv["id"]
    for admin in (bob, carol):
        await a.ok("conversation.set_role", {"conversation_id": cid, "user_id": admin,
                                             "role": "admin"})

    err = await b.error("conversation.remove_members", {"conversation_id": cid,
                                                        "members": [alice]})
    assert err["code"] == "forbidden"
    err = await b.error("conversation.remove_members", {"conversation_id": cid,
                                                        "members": [carol]})
    assert err["code"] == "forbidden"
    err = await d.error("conversation.remove_members", {"conversation_id": cid,
                                                        "members": [bob]})
    assert err["code"] == "forbidden"  # a plain member removes no one
    got = (await a.ok("conversation.get", {"conversation_id": cid}))["conversation"]
    assert got["members"] == [alice, bob, carol, dave]

    # an admin may remove a plain member; the owner may remove an admin
    after = (await b.ok("conversation.remove_members", {"conversation_id": cid,
                                                        "members": [dave]}))["conversation"]
    assert after["members"] == [alice, bob, carol]
    after = (await a.ok("conversation.remove_members", {"conversation_id": cid,
                                                        "members": [carol]}))["conversation"]
    assert after["members"] == [alice, bob]
    assert after["admins"] == [bob]


async def test_membership_changes_need_a_group(connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    dm = await direct(a, bob)
    for op in ("conversation.add_members", "conversation.remove_members"):
        err = await a.error(op, {"conversation_id": dm["id"], "members": [carol]})
        assert err["code"] == "bad_request", op


# -- leave -------------------------------------------------------------------------------------


async def test_when_the_owner_leaves_the_oldest_remaining_member_owns_the_group(
        connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    a2 = await connect(alice, 1)  # the leaver's other connection
    b = await connect(bob, 1)
    c = await connect(carol, 0)
    conv = await group(a, bob, title="handover")
    cid = conv["id"]
    await a.ok("conversation.add_members", {"conversation_id": cid, "members": [carol]})
    await a.ok("conversation.set_role", {"conversation_id": cid, "user_id": carol,
                                         "role": "admin"})
    for member in (b, c, a2):  # every change so far has arrived
        await updated_until(member, lambda conv: conv["admins"] == [carol])

    assert await a.ok("conversation.leave", {"conversation_id": cid}) == {}

    for member in (b, c, a2):
        seen = (await member.event("conversation.updated"))["data"]["conversation"]
        assert seen["members"] == [bob, carol]
        assert seen["owner"] == bob  # the oldest member, not the newer admin
    got = (await c.ok("conversation.get", {"conversation_id": cid}))["conversation"]
    assert got["owner"] == bob and got["members"] == [bob, carol] and got["admins"] == [carol]
    assert (await a.error("conversation.get", {"conversation_id": cid}))["code"] == "not_found"
    assert cid not in await list_ids(a)
    renamed = (await b.ok("conversation.update", {"conversation_id": cid, "title": "bob's"}))
    assert renamed["conversation"]["title"] == "bob's"

    assert await c.ok("conversation.leave", {"conversation_id": cid}) == {}
    seen = (await updated_until(b, lambda conv: carol not in conv["members"]))["data"]
    assert seen["conversation"]["members"] == [bob]
    got = (await b.ok("conversation.get", {"conversation_id": cid}))["conversation"]
    assert got["owner"] == bob and got["members"] == [bob] and got["admins"] == []


async def test_a_direct_conversation_cannot_be_left(connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    dm = await direct(a, bob)
    assert (await a.error("conversation.leave", {"conversation_id": dm["id"]}))["code"] == \
        "bad_request"
    got = (await a.ok("conversation.get", {"conversation_id": dm["id"]}))["conversation"]
    assert sorted(got["members"]) == sorted([alice, bob])


# -- roles -------------------------------------------------------------------------------------


async def test_the_owner_makes_an_admin_who_can_then_rename(connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    c = await connect(carol, 1)
    conv = await group(a, bob, carol, title="t0")
    cid = conv["id"]
    assert (await b.error("conversation.update", {"conversation_id": cid, "title": "t1"}))[
        "code"] == "forbidden"

    promoted = (await a.ok("conversation.set_role", {"conversation_id": cid, "user_id": bob,
                                                     "role": "admin"}))["conversation"]
    assert promoted["admins"] == [bob]
    frame = await updated_until(c, lambda seen: seen["admins"] == [bob])
    assert frame["event_seq"] == promoted["last_event_seq"]
    renamed = (await b.ok("conversation.update", {"conversation_id": cid, "title": "t1"}))
    assert renamed["conversation"]["title"] == "t1"

    err = await c.error("conversation.set_role", {"conversation_id": cid, "user_id": carol,
                                                  "role": "admin"})
    assert err["code"] == "forbidden"
    err = await b.error("conversation.set_role", {"conversation_id": cid, "user_id": carol,
                                                  "role": "admin"})
    assert err["code"] == "forbidden"  # admins do not make admins

    demoted = (await a.ok("conversation.set_role", {"conversation_id": cid, "user_id": bob,
                                                    "role": "member"}))["conversation"]
    assert demoted["admins"] == []
    assert (await b.error("conversation.update", {"conversation_id": cid, "title": "t2"}))[
        "code"] == "forbidden"
