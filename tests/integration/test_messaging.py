"""Messages across replicas: every message op and the events it causes (PROTOCOL.md §2)."""

from __future__ import annotations

from tests.chatclient import group
from tests.integration.conftest import Connect


async def test_send_reaches_every_member_on_both_replicas_but_not_the_sending_connection(
        connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    a2 = await connect(alice, 1)  # the sender's other connection gets the event too
    b = await connect(bob, 1)
    c = await connect(carol, 0)
    cid = await group(a, bob, carol)

    sent = (await a.ok("message.send", {"conversation_id": cid, "client_msg_id": "m1",
                                        "text": "hello"}))["message"]

    assert sent["seq"] == 1 and sent["sender_id"] == alice and sent["text"] == "hello"
    for other in (a2, b, c):
        frame = await other.event("message.new")
        assert frame["data"]["message"] == sent
        assert frame["event_seq"] > 1  # after the conversation's creation
    await a.no_event("message.new")


async def test_edit_react_delete_and_their_events(connect: Connect, users) -> None:
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    b = await connect(bob, 1)
    cid = await group(a, bob)
    msg = (await a.ok("message.send", {"conversation_id": cid, "client_msg_id": "1",
                                       "text": "first"}))["message"]
    await b.event("message.new")

    reacted = (await b.ok("reaction.add", {"message_id": msg["id"], "emoji": "👍"}))["message"]
    assert reacted["reactions"] == {"👍": [bob]}
    assert (await a.event("message.updated"))["data"]["message"]["reactions"] == {"👍": [bob]}

    edited = (await a.ok("message.edit", {"message_id": msg["id"], "text": "second"}))["message"]
    assert edited["text"] == "second" and edited["edited_at"] is not None
    assert edited["reactions"] == {"👍": [bob]}, "an edit keeps the reactions"
    assert (await b.event("message.updated", ))["data"]["message"]["text"] == "second"

    removed = (await b.ok("reaction.remove", {"message_id": msg["id"], "emoji": "👍"}))["message"]
    assert removed["reactions"] == {}
    await a.event("message.updated")

    tomb = (await a.ok("message.delete", {"message_id": msg["id"]}))["message"]
    assert tomb["deleted"] is True and tomb["text"] == "" and tomb["reactions"] == {}
    assert tomb["id"] == msg["id"] and tomb["seq"] == msg["seq"]
    assert (await b.event("message.deleted"))["data"]["message"] == tomb
    again = (await a.ok("message.delete", {"message_id": msg["id"]}))["message"]
    assert again == tomb
    await b.no_event("message.deleted")
