"""Bad input, over real sockets (PROTOCOL.md §1-§2: "Error codes", "Isolation", "Limits").

Every refused frame gets an error response with the documented code (and the request's id when
one could be read), the message names the offending field, the connection keeps working, and
nothing is stored. Refused handshakes are HTTP 401; ids of another app or of a conversation one
is not a member of are ``not_found``. The gateway answers bad bodies with 400/422 and a JSON
error naming the field, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.chatclient import Client, Cluster, group
from tests.integration.conftest import Connect

# -- helpers -----------------------------------------------------------------------------------



async def snapshot(c: Client, cid: str) -> dict[str, Any]:
    """Everything a refused request must leave untouched: history, the change log, the title
    and the members."""
    history = await c.ok("message.history", {"conversation_id": cid, "limit": 100})
    sync = await c.ok("conversation.sync", {"conversation_id": cid, "after_event_seq": 0,
                                            "limit": 500})
    conv = (await c.ok("conversation.get", {"conversation_id": cid}))["conversation"]
    return {"messages": history["messages"], "events": sync["events"],
            "title": conv["title"], "members": sorted(conv["members"])}


MARKER = "marker-"


async def settled(c: Client, cid: str, marker: str) -> dict[str, Any]:
    """The conversation's snapshot once it is settled: the caller sends a message ``marker``
    now, after whatever it tested, and waits until it is in history, so anything the pipeline
    had to write before it is written too (read your writes: within 1 s). Marker messages are
    left out of the snapshot."""
    marker = MARKER + marker
    await c.ok("message.send", {"conversation_id": cid, "client_msg_id": marker,
                                "text": marker})
    deadline = time.monotonic() + 3
    while True:
        snap = await snapshot(c, cid)
        if any(m["client_msg_id"] == marker for m in snap["messages"]):
            break
        assert time.monotonic() < deadline, f"{marker} not in history within 3 s"
        await asyncio.sleep(0.02)
    snap["messages"] = [m for m in snap["messages"]
                        if not m["client_msg_id"].startswith(MARKER)]
    # A conversation event carries the conversation's current view (last_seq, unread_count..),
    # which the marker moves: keep what a refused request could have changed.
    snap["events"] = [
        (e["event"], e["event_seq"], e["data"]["message"]) if "message" in e["data"] else
        (e["event"], e["event_seq"], e["data"]["conversation"]["title"],
         sorted(e["data"]["conversation"]["members"]))
        for e in snap["events"]
        if not e["data"].get("message", {}).get("client_msg_id", "").startswith(MARKER)]
    return snap


def names(message: str, field: str) -> bool:
    """Whether an error message names ``field`` (as a word: "id" is not in "invalid")."""
    return re.search(rf"(?<!\w){re.escape(field)}(?!\w)", message) is not None


async def still_works(c: Client) -> None:
    """The same connection answers a ping after the refused frame."""
    assert "server_time" in await c.ok("ping", {})


async def answer_to_raw(c: Client, raw: str | bytes) -> dict[str, Any]:
    """Send a frame the client's request() cannot express and return its answer."""
    await c.send_raw(raw)
    return await c.next_uncorrelated()


@pytest.fixture
async def room(connect: Connect, users) -> tuple[Client, str, dict[str, Any]]:
    """Alice in a group with bob, with one message in it."""
    alice, bob = users("alice", "bob")
    a = await connect(alice, 0)
    cid = await group(a, bob)
    msg = (await a.ok("message.send", {"conversation_id": cid, "client_msg_id": "seed",
                                       "text": "seed"}))["message"]
    return a, cid, msg


# -- malformed frames --------------------------------------------------------------------------

# (name, frame, expected id in the answer, words the message must contain)
MALFORMED: list[tuple[str, str | bytes, str | None, list[str]]] = [
    ("malformed JSON", '{"id": "x1", "op": "ping", "data": {', None, []),
    ("not JSON at all", "hello", None, []),
    ("JSON array", '[{"id": "x2", "op": "ping", "data": {}}]', None, []),
    ("JSON number", "42", None, []),
    ("JSON string", '"ping"', None, []),
    ("JSON null", "null", None, []),
    ("id not a string", '{"id": 5, "op": "ping", "data": {}}', None, ["id"]),
    ("id an object", '{"id": {"a": 1}, "op": "ping", "data": {}}', None, ["id"]),
    ("missing op", '{"id": "x3", "data": {}}', "x3", ["op"]),
    ("op not a string", '{"id": "x4", "op": 7, "data": {}}', "x4", ["op"]),
    ("unknown op", '{"id": "x5", "op": "message.explode", "data": {}}', "x5",
     ["message.explode"]),
    ("data a string", '{"id": "x6", "op": "ping", "data": "{}"}', "x6", ["data"]),
    ("data an array", '{"id": "x7", "op": "ping", "data": []}', "x7", ["data"]),
    ("data a number", '{"id": "x8", "op": "message.history", "data": 3}', "x8", ["data"]),
]


@pytest.mark.parametrize(("frame", "want_id", "words"),
                         [pytest.param(f, i, w, id=n) for n, f, i, w in MALFORMED])
async def test_malformed_frame_is_answered_bad_request_and_the_connection_stays_open(
        room, frame: str | bytes, want_id: str | None, words: list[str]) -> None:
    a, cid, _ = room
    before = await settled(a, cid, "before")

    answer = await answer_to_raw(a, frame)

    assert answer["ok"] is False, answer
    assert answer["id"] == want_id, answer
    assert answer["error"]["code"] == "bad_request", answer
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    for word in words:
        assert names(answer["error"]["message"], word), answer
    assert "retry_after_ms" not in answer["error"]
    await still_works(a)
    assert await settled(a, cid, "after") == before
    assert a.uncorrelated == [], "exactly one answer per frame"


async def test_binary_frame_with_valid_json_is_answered_not_dropped(room) -> None:
    a, _, _ = room
    answer = await answer_to_raw(a, json.dumps({"id": "bin1", "op": "ping",
                                                "data": {}}).encode())
    assert answer["id"] == "bin1", answer
    if answer["ok"]:
        assert "server_time" in answer["data"]
    else:
        assert answer["error"]["code"] == "bad_request", answer
    await still_works(a)


async def test_unknown_fields_are_ignored(room) -> None:
    """Newer SDKs send fields an older server does not know: they are not an error."""
    a, _, _ = room
    answer = await answer_to_raw(a, json.dumps({"id": "u1", "op": "ping", "data": {"x": 1},
                                                "extra": True}))
    assert answer["ok"] is True and answer["id"] == "u1", answer


# -- invalid data of a known op ----------------------------------------------------------------

def _cases() -> list[Any]:
    # (name, op, data builder(cid, msg), field the message must name)
    C = pytest.param
    return [
        C("message.send", lambda cid, m: {"conversation_id": cid, "text": "x"},
          "client_msg_id", id="send-missing-client_msg_id"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n1"},
          "text", id="send-missing-text"),
        C("message.send", lambda cid, m: {"client_msg_id": "n2", "text": "x"},
          "conversation_id", id="send-missing-conversation_id"),
        C("conversation.get", lambda cid, m: {"conversation_id": 5},
          "conversation_id", id="get-conversation_id-int"),
        C("message.send", lambda cid, m: {"conversation_id": 5, "client_msg_id": "n3",
                                          "text": "x"},
          "conversation_id", id="send-conversation_id-int"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": 9,
                                          "text": "x"},
          "client_msg_id", id="send-client_msg_id-int"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n4",
                                          "text": ["x"]},
          "text", id="send-text-list"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "",
                                          "text": "x"},
          "client_msg_id", id="send-client_msg_id-empty"),
        C("conversation.create", lambda cid, m: {"type": "group", "members": "bob"},
          "members", id="create-members-string"),
        C("conversation.create", lambda cid, m: {"type": "channel", "members": []},
          "type", id="create-type-unknown"),
        C("conversation.add_members", lambda cid, m: {"conversation_id": cid,
                                                      "members": "bob"},
          "members", id="add_members-string"),
        C("message.history", lambda cid, m: {"conversation_id": cid, "limit": "ten"},
          "limit", id="history-limit-string"),
        C("message.history", lambda cid, m: {"conversation_id": cid, "limit": 101},
          "limit", id="history-limit-101"),
        C("message.history", lambda cid, m: {"conversation_id": cid, "limit": 0},
          "limit", id="history-limit-0"),
        C("message.history", lambda cid, m: {"conversation_id": cid, "before_seq": -1},
          "before_seq", id="history-before_seq-negative"),
        C("message.history", lambda cid, m: {"conversation_id": cid, "after_seq": -5},
          "after_seq", id="history-after_seq-negative"),
        C("conversation.sync", lambda cid, m: {"conversation_id": cid, "after_event_seq": 0,
                                               "limit": 501},
          "limit", id="sync-limit-501"),
        C("conversation.sync", lambda cid, m: {"conversation_id": cid, "after_event_seq": -1},
          "after_event_seq", id="sync-after_event_seq-negative"),
        C("conversation.sync", lambda cid, m: {"conversation_id": cid},
          "after_event_seq", id="sync-missing-after_event_seq"),
        C("conversation.list", lambda cid, m: {"limit": 1000},
          "limit", id="list-limit-1000"),
        C("receipt.read", lambda cid, m: {"conversation_id": cid, "seq": -1},
          "seq", id="read-seq-negative"),
        C("receipt.read", lambda cid, m: {"conversation_id": cid, "seq": 1.5},
          "seq", id="read-seq-float"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n5",
                                          "text": ""},
          "text", id="send-text-empty"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n6",
                                          "text": "   \n\t "},
          "text", id="send-text-whitespace"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n7",
                                          "text": "x" * 4001},
          "text", id="send-text-4001"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n8",
                                          "text": "é" * 4001},
          "text", id="send-text-4001-non-ascii"),
        C("message.edit", lambda cid, m: {"message_id": m["id"], "text": "x" * 4001},
          "text", id="edit-text-4001"),
        C("message.edit", lambda cid, m: {"message_id": m["id"], "text": ""},
          "text", id="edit-text-empty"),
        C("reaction.add", lambda cid, m: {"message_id": m["id"], "emoji": "x" * 33},
          "emoji", id="reaction-emoji-33"),
        C("reaction.add", lambda cid, m: {"message_id": m["id"], "emoji": ""},
          "emoji", id="reaction-emoji-empty"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n9",
                                          "text": "x", "attachments": [{}] * 11},
          "attachments", id="send-11-attachments"),
        C("message.send", lambda cid, m: {"conversation_id": cid, "client_msg_id": "n10",
                                          "text": "x", "attachments": {"a": 1}},
          "attachments", id="send-attachments-object"),
        C("conversation.update", lambda cid, m: {"conversation_id": cid, "title": "t" * 201},
          "title", id="update-title-201"),
        C("presence.get", lambda cid, m: {"users": [f"u{i}" for i in range(101)]},
          "users", id="presence-101-users"),
        C("user.get", lambda cid, m: {"users": "bob"},
          "users", id="user.get-users-string"),
    ]


@pytest.mark.parametrize(("op", "build", "field"), _cases())
async def test_invalid_data_is_bad_request_naming_the_field_and_nothing_is_stored(
        room, op: str, build: Any, field: str) -> None:
    a, cid, msg = room
    before = await settled(a, cid, "before")

    frame = await a.request(op, build(cid, msg))

    assert frame["ok"] is False, f"{op} accepted {build(cid, msg)!r}: {frame}"
    assert frame["id"] is not None
    assert frame["error"]["code"] == "bad_request", frame
    assert names(frame["error"]["message"], field), frame
    await still_works(a)
    assert await settled(a, cid, "after") == before


async def test_text_of_exactly_4000_characters_and_32_character_emoji_are_accepted(
        room) -> None:
    a, cid, _ = room
    text = "€" * 4000  # characters, not bytes: 12,000 bytes of UTF-8
    sent = (await a.ok("message.send", {"conversation_id": cid, "client_msg_id": "max",
                                        "text": text}))["message"]
    assert sent["text"] == text
    emoji = "👍" * 32
    reacted = (await a.ok("reaction.add", {"message_id": sent["id"], "emoji": emoji}))
    assert reacted["message"]["reactions"] == {emoji: [a.user]}
    ten = [{"n": i} for i in range(10)]
    with_attachments = (await a.ok("message.send", {
        "conversation_id": cid, "client_msg_id": "ten", "text": "x", "attachments": ten}))
    assert with_attachments["message"]["seq"] > sent["seq"]
    assert with_attachments["message"]["attachments"] == ten
    deadline = time.monotonic() + 3
    while True:  # read your writes: in history within 1 s
        history = (await a.ok("message.history", {"conversation_id": cid}))["messages"]
        if len(history) >= 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert [m["text"] for m in history][-2:] == [text, "x"]
    assert history[-2]["reactions"] == {emoji: [a.user]}
    assert history[-1]["attachments"] == ten


async def test_refused_send_burns_nothing_for_its_client_msg_id(room) -> None:
    """A send refused for its text does not reserve its client_msg_id: a corrected retry with
    the same client_msg_id is stored as a new message with the text of the retry."""
    a, cid, seed = room
    err = await a.error("message.send", {"conversation_id": cid, "client_msg_id": "retry",
                                         "text": "x" * 4001})
    assert err["code"] == "bad_request"
    sent = (await a.ok("message.send", {"conversation_id": cid, "client_msg_id": "retry",
                                        "text": "fixed"}))["message"]
    assert sent["text"] == "fixed" and sent["seq"] > seed["seq"]


# -- tokens at the handshake -------------------------------------------------------------------

def jwt_secret(cluster: Cluster) -> str:
    return str(json.loads((cluster.state_dir / "credentials.json").read_text())["jwt_secret"])


async def refused(url: str, **kwargs: Any) -> int:
    """The HTTP status of a handshake that must be refused."""
    with pytest.raises(InvalidStatus) as info:
        ws = await websockets.connect(url, **kwargs)
        await ws.close()
    return int(info.value.response.status_code)


def bearer(token: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


async def test_handshake_refuses_missing_garbage_and_foreign_tokens_with_401(
        cluster: Cluster, users) -> None:
    (alice,) = users("alice")
    tokens = await cluster.token(alice)
    live = (await Client.connect(cluster.socket_urls[0], tokens["access_token"], alice))
    sid = live.ready["session_id"]
    await live.close()
    now = int(time.time())
    claims = {"typ": "access", "app": cluster.app_id, "sub": alice, "sid": sid, "jti": "x",
              "iat": now, "exp": now + 600}
    other_secret = jwt.encode(claims, "another-secret-of-at-least-32-chars!!", algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")

    for url in cluster.socket_urls:
        assert await refused(url) == 401, "no token"
        assert await refused(url, additional_headers={"Authorization": "Bearer"}) == 401
        assert await refused(url, additional_headers={
            "Authorization": f"Basic {tokens['access_token']}"}) == 401, "not a Bearer token"
        assert await refused(url, **bearer("garbage")) == 401
        assert await refused(url, **bearer(tokens["access_token"][:-4] + "AAAA")) == 401
        assert await refused(url, **bearer(other_secret)) == 401, "signed with another secret"
        assert await refused(url, **bearer(unsigned)) == 401, "alg none"
        assert await refused(url, **bearer(tokens["refresh_token"])) == 401, "a refresh token"
        assert await refused(f"{url}/?access_token=garbage") == 401
        assert await refused(f"{url}/?access_token={tokens['refresh_token']}") == 401


async def test_expired_token_is_refused_but_the_same_claims_unexpired_are_accepted(
        cluster: Cluster, users) -> None:
    (alice,) = users("alice")
    tokens = await cluster.token(alice)
    live = await Client.connect(cluster.socket_urls[1], tokens["access_token"], alice)
    sid = live.ready["session_id"]
    secret = jwt_secret(cluster)
    now = int(time.time())
    claims = {"typ": "access", "app": cluster.app_id, "sub": alice, "sid": sid, "jti": "x",
              "iat": now - 3600}
    expired = jwt.encode({**claims, "exp": now - 60}, secret, algorithm="HS256")
    valid = jwt.encode({**claims, "exp": now + 600}, secret, algorithm="HS256")

    for url in cluster.socket_urls:
        assert await refused(url, **bearer(expired)) == 401
        assert await refused(f"{url}/?access_token={expired}") == 401
    control = await Client.connect(cluster.socket_urls[0], valid, alice)
    assert control.ready["user_id"] == alice and control.ready["session_id"] == sid
    await still_works(control)
    await control.close()
    await still_works(live)  # an open socket is not closed by another handshake's refusal
    await live.close()


async def test_revoked_session_is_refused_at_the_handshake(cluster: Cluster, users) -> None:
    (alice,) = users("alice")
    tokens = await cluster.token(alice)
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        r = await http.post("/api/v1/auth/logout",
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 204, r.text
    for url in cluster.socket_urls:
        assert await refused(url, **bearer(tokens["access_token"])) == 401
        assert await refused(f"{url}/?access_token={tokens['access_token']}") == 401


async def test_query_token_form_works(cluster: Cluster, users) -> None:
    (alice,) = users("alice")
    tokens = await cluster.token(alice)
    for url in cluster.socket_urls:
        c = await Client.connect(url, tokens["access_token"], alice, via="query")
        assert c.ready["user_id"] == alice
        await still_works(c)
        await c.close()


# -- isolation: ids of another app, and of conversations one is not in ---------------------------

def foreign_ops(cid: str, mid: str, own_cid: str, own_mid: str, user: str
                ) -> list[tuple[str, dict[str, Any]]]:
    """Every op that takes a conversation or message id, aimed at (cid, mid); own_* are ids the
    caller may use, so only the foreign id is wrong."""
    return [
        ("conversation.get", {"conversation_id": cid}),
        ("conversation.update", {"conversation_id": cid, "title": "pwned"}),
        ("conversation.add_members", {"conversation_id": cid, "members": [user]}),
        ("conversation.remove_members", {"conversation_id": cid, "members": [user]}),
        ("conversation.set_role", {"conversation_id": cid, "user_id": user, "role": "admin"}),
        ("conversation.leave", {"conversation_id": cid}),
        ("conversation.sync", {"conversation_id": cid, "after_event_seq": 0}),
        ("message.send", {"conversation_id": cid, "client_msg_id": "evil", "text": "hi"}),
        ("message.edit", {"message_id": mid, "text": "pwned"}),
        ("message.delete", {"message_id": mid}),
        ("message.forward", {"message_id": mid, "conversation_id": own_cid,
                             "client_msg_id": "fwd-in"}),
        ("message.forward", {"message_id": own_mid, "conversation_id": cid,
                             "client_msg_id": "fwd-out"}),
        ("reaction.add", {"message_id": mid, "emoji": "👀"}),
        ("reaction.remove", {"message_id": mid, "emoji": "👍"}),
        ("message.history", {"conversation_id": cid}),
        ("message.history", {"conversation_id": cid, "after_seq": 0}),
        ("receipt.read", {"conversation_id": cid, "seq": 1}),
        ("receipt.delivered", {"conversation_id": cid, "seq": 1}),
        ("typing.start", {"conversation_id": cid}),
        ("typing.stop", {"conversation_id": cid}),
    ]


async def assert_all_not_found(c: Client, calls: list[tuple[str, dict[str, Any]]]) -> None:
    wrong = []
    for op, data in calls:
        frame = await c.request(op, data)
        if frame["ok"] or frame["error"]["code"] != "not_found":
            wrong.append((op, data, frame))
    assert not wrong, "expected not_found:\n" + "\n".join(map(repr, wrong))


async def test_ids_of_another_app_are_not_found_and_leave_it_untouched(
        cluster: Cluster, connect: Connect, users) -> None:
    other = await cluster.new_app("isolation")
    alice, bob, eve, frank = users("alice", "bob", "eve", "frank")
    # In the other app: eve and frank, plus a user whose external id is alice's.
    e = await connect(eve, 0, app=other)
    f = await connect(frank, 1, app=other)
    twin = await connect(alice, 1, app=other)
    their_cid = await group(e, frank, alice, title="secret")
    their_msg = (await e.ok("message.send", {"conversation_id": their_cid,
                                             "client_msg_id": "s1", "text": "secret"}))["message"]
    await e.ok("reaction.add", {"message_id": their_msg["id"], "emoji": "👍"})
    before = await settled(e, their_cid, "before")
    # In the default app: alice (same external id as the twin) in a group with bob.
    a = await connect(alice, 0)
    await connect(bob, 1)
    own_cid = await group(a, bob)
    own_msg = (await a.ok("message.send", {"conversation_id": own_cid, "client_msg_id": "o1",
                                           "text": "mine"}))["message"]
    for c in (e, f, twin):
        c.drain()
    own_before = await settled(a, own_cid, "before")

    await assert_all_not_found(a, foreign_ops(their_cid, their_msg["id"], own_cid,
                                              own_msg["id"], alice))

    # Nothing of the other app leaked out, nothing of this app leaked in.
    assert await settled(e, their_cid, "after") == before
    assert await settled(a, own_cid, "after") == own_before
    listed = (await a.ok("conversation.list", {"limit": 100}))["conversations"]
    assert [conv["id"] for conv in listed] == [own_cid]
    presence = (await a.ok("presence.get", {"users": [eve, frank, alice]}))["presence"]
    assert set(presence) == {alice}, presence
    names = (await a.ok("user.get", {"users": [eve, frank]}))["users"]
    assert names == {}, names
    for c in (e, f, twin):
        await c.no_event("typing", within=0.3)
        leaked = [ev for ev in c.drain() if ev["event"] != "presence" and not ev["data"].get(
            "message", {}).get("client_msg_id", "").startswith(MARKER)]
        assert not leaked, (c.user, leaked)
    # ...and the other way round.
    await assert_all_not_found(e, foreign_ops(own_cid, own_msg["id"], their_cid,
                                              their_msg["id"], eve))
    presence = (await e.ok("presence.get", {"users": [bob, eve]}))["presence"]
    assert set(presence) == {eve}, presence
    assert await settled(a, own_cid, "after2") == own_before


async def test_non_member_gets_not_found_not_forbidden(connect: Connect, users) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice, 0)
    c = await connect(carol, 1)
    cid = await group(a, bob, title="private")
    msg = (await a.ok("message.send", {"conversation_id": cid, "client_msg_id": "p1",
                                       "text": "private"}))["message"]
    carol_cid = await group(c, title="carol's")
    carol_msg = (await c.ok("message.send", {"conversation_id": carol_cid,
                                             "client_msg_id": "c1", "text": "hi"}))["message"]
    before = await settled(a, cid, "before")

    await assert_all_not_found(c, foreign_ops(cid, msg["id"], carol_cid, carol_msg["id"],
                                              carol))
    # An id that never existed answers exactly like one that exists elsewhere.
    await assert_all_not_found(c, foreign_ops("c_doesnotexist", "m_doesnotexist", carol_cid,
                                              carol_msg["id"], carol))

    assert await settled(a, cid, "after") == before
    assert (await c.ok("presence.get", {"users": [alice, bob]}))["presence"] == {}
    assert (await c.ok("user.get", {"users": [alice, bob]}))["users"] == {}
    await a.no_event("typing", within=0.3)


# -- the gateway -------------------------------------------------------------------------------

def assert_error_body(r: httpx.Response, statuses: set[int], code: str | None = None,
                      field: str | None = None) -> dict[str, Any]:
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code, body
    if field is not None:
        assert names(body["error"]["message"], field), body
    return dict(body)


TOKEN = "/api/v1/auth/sdk/token"


async def test_gateway_refuses_malformed_bodies_naming_the_field(cluster: Cluster) -> None:
    good = {"app_id": cluster.app_id, "app_secret": cluster.app_secret,
            "user_external_id": "gw-user"}
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        bad = {400, 422}
        r = await http.post(TOKEN, content=b'{"app_id": ',
                            headers={"Content-Type": "application/json"})
        assert_error_body(r, bad)
        r = await http.post(TOKEN, content=b"not json at all",
                            headers={"Content-Type": "application/json"})
        assert_error_body(r, bad)
        r = await http.post(TOKEN, content=b"")
        assert_error_body(r, bad)
        r = await http.post(TOKEN, json=[good])
        assert_error_body(r, bad)
        for missing in ("app_id", "app_secret", "user_external_id"):
            body = {k: v for k, v in good.items() if k != missing}
            r = await http.post(TOKEN, json=body)
            assert_error_body(r, bad, field=missing)
        r = await http.post(TOKEN, json={**good, "user_external_id": ""})
        assert_error_body(r, bad, field="user_external_id")
        r = await http.post(TOKEN, json={**good, "user_external_id": "u" * 129})
        assert_error_body(r, bad, field="user_external_id")
        r = await http.post(TOKEN, json={**good, "user_external_id": {"x": 1}})
        assert_error_body(r, bad, field="user_external_id")
        r = await http.post(TOKEN, json={**good, "display_name": 5})
        assert_error_body(r, bad, field="display_name")
        r = await http.post("/api/v1/auth/refresh", json={})
        assert_error_body(r, bad, field="refresh_token")
        r = await http.post("/api/v1/auth/refresh", json={"refresh_token": 5})
        assert_error_body(r, bad, field="refresh_token")
        r = await http.post("/api/v1/admin/apps", json={},
                            headers={"Authorization": f"Bearer {cluster.admin_token}"})
        assert_error_body(r, bad, field="name")
        # The good body still works: nothing above broke the gateway.
        r = await http.post(TOKEN, json=good)
        assert r.status_code == 200, r.text


async def test_gateway_refuses_bad_credentials_and_tokens_with_401(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        wrong_secret = await http.post(TOKEN, json={
            "app_id": cluster.app_id, "app_secret": "wrong", "user_external_id": "x"})
        unknown_app = await http.post(TOKEN, json={
            "app_id": "app_doesnotexist", "app_secret": "wrong", "user_external_id": "x"})
        unknown_app_real_secret = await http.post(TOKEN, json={
            "app_id": "app_doesnotexist", "app_secret": cluster.app_secret,
            "user_external_id": "x"})
        for r in (wrong_secret, unknown_app, unknown_app_real_secret):
            assert_error_body(r, {401}, code="invalid_credentials")
        assert wrong_secret.content == unknown_app.content == unknown_app_real_secret.content
        assert wrong_secret.headers.get("www-authenticate") == \
            unknown_app.headers.get("www-authenticate")

        tokens = await cluster.token("gw-user-2")
        for token in ("garbage", tokens["access_token"]):
            r = await http.post("/api/v1/auth/refresh", json={"refresh_token": token})
            assert_error_body(r, {401}, code="unauthorized")
        for auth in (None, "Bearer", "Bearer garbage", f"Bearer {tokens['refresh_token']}",
                     f"Basic {tokens['access_token']}"):
            headers = {"Authorization": auth} if auth else {}
            r = await http.post("/api/v1/auth/logout", headers=headers)
            assert_error_body(r, {401}, code="unauthorized")
        for auth in (None, "Bearer wrong", f"Bearer {tokens['access_token']}"):
            headers = {"Authorization": auth} if auth else {}
            r = await http.post("/api/v1/admin/apps", json={"name": "x"}, headers=headers)
            assert_error_body(r, {401, 403})
        # The session was never touched by the refused logouts.
        r = await http.post("/api/v1/auth/refresh",
                            json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 200, r.text
