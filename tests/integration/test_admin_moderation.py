"""Moderation through the admin API against a real cluster: bans, mutes, freezes, moderator
deletes, who may do each, and what the socket then refuses (docs/moderation.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.chatclient import Client, Cluster, group, wait_for
from tests.integration.adminclient import Admin, audit, call, create_admin
from tests.integration.conftest import unique
from tests.integration.moderationclient import (
    RANK,
    ROLES,
    admin_call,
    connect_close_code,
    expect_refused,
    open_socket,
    refresh,
    sign_in,
)


@pytest.fixture
async def team(cluster: Cluster) -> dict[str, Admin]:
    return {role: await create_admin(cluster, role) for role in ROLES}


async def send(client: Client, cid: str, text: str) -> dict[str, Any]:
    data = await client.ok("message.send", {"conversation_id": cid, "client_msg_id": unique("m"),
                                            "text": text})
    return dict(data["message"])


async def test_every_moderation_route_enforces_its_role(cluster: Cluster,
                                                        team: dict[str, Admin]) -> None:
    owner = await open_socket(cluster, unique("mod-owner"))
    target = unique("mod-target")
    member = await open_socket(cluster, target)
    reporter = unique("mod-reporter")  # the target's socket closes once banned: not theirs
    flagger = await open_socket(cluster, reporter)
    cid = await group(owner, target, reporter)
    app = cluster.app_id

    async def banned() -> None:
        r = await admin_call(cluster, "PUT", f"/apps/{app}/users/{target}/ban", json={})
        assert r.status_code == 200, r.text

    async def message() -> dict[str, str]:
        return {"m": (await send(owner, cid, "to delete"))["id"]}

    async def nothing() -> dict[str, str]:
        return {}

    async def flagged() -> dict[str, str]:
        mid = (await send(owner, cid, "to flag"))["id"]
        return {"f": (await flagger.ok("message.flag", {"message_id": mid}))["flag"]["id"]}

    async def then_banned() -> dict[str, str]:
        await banned()
        return {}

    Prepare = Callable[[], Awaitable[dict[str, str]]]
    routes: list[tuple[str, str, Any, Prepare, str, int]] = [
        ("GET", "/apps/{app}/bans", None, nothing, "viewer", 200),
        ("PUT", "/apps/{app}/users/{user}/ban", {"reason": "spam"}, nothing, "moderator", 200),
        ("DELETE", "/apps/{app}/users/{user}/ban", None, then_banned, "moderator", 204),
        ("GET", "/apps/{app}/conversations/{cid}/moderation", None, nothing, "viewer", 200),
        ("PUT", "/apps/{app}/conversations/{cid}/mutes/{user}", None, nothing, "moderator",
         204),
        ("DELETE", "/apps/{app}/conversations/{cid}/mutes/{user}", None, nothing, "moderator",
         204),
        ("POST", "/apps/{app}/conversations/{cid}/freeze", None, nothing, "moderator", 200),
        ("POST", "/apps/{app}/conversations/{cid}/unfreeze", None, nothing, "moderator", 200),
        ("DELETE", "/apps/{app}/messages/{m}", None, message, "moderator", 200),
        ("GET", "/apps/{app}/flags", None, nothing, "viewer", 200),
        ("POST", "/apps/{app}/flags/{f}/resolve", {"action": "dismiss"}, flagged, "moderator",
         200),
    ]
    for method, template, body, prepare, least, success in routes:
        actors: dict[str, tuple[str | None, int]] = {"root": (cluster.admin_token, success)}
        for role, admin in team.items():
            actors[role] = (admin.token, success if RANK[role] >= RANK[least] else 403)
        actors["no token"] = ("", 401)
        for actor, (token, expected) in actors.items():
            path = template.format(app=app, user=target, cid=cid, **await prepare())
            r = await call(cluster, method, path, token or None, json=body)
            assert r.status_code == expected, (method, template, actor, r.text)
            if expected >= 400:
                assert r.json()["error"]["code"] == {401: "unauthorized",
                                                     403: "forbidden"}[expected]
    await admin_call(cluster, "DELETE", f"/apps/{app}/users/{target}/ban")
    await owner.close()
    await member.close()
    await flagger.close()


async def test_other_apps_ids_answer_not_found(cluster: Cluster) -> None:
    other_app = await cluster.new_app("moderation-other")
    stranger = unique("stranger")
    theirs = await open_socket(cluster, stranger, app=other_app)
    friend = unique("friend")
    cid = await group(theirs, friend)
    mid = (await send(theirs, cid, "not yours"))["id"]
    scoped = await create_admin(cluster, "moderator", name="scoped-mod",
                                app_ids=[cluster.app_id])
    app = cluster.app_id
    for method, path in (("PUT", f"/apps/{app}/users/{stranger}/ban"),
                         ("GET", f"/apps/{app}/conversations/{cid}/moderation"),
                         ("PUT", f"/apps/{app}/conversations/{cid}/mutes/{stranger}"),
                         ("POST", f"/apps/{app}/conversations/{cid}/freeze"),
                         ("DELETE", f"/apps/{app}/messages/{mid}"),
                         ("GET", "/apps/app_nope/bans")):
        r = await admin_call(cluster, method, path, json={} if method == "PUT" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    other_id = other_app[0]
    for method, path in (("PUT", f"/apps/{other_id}/users/{stranger}/ban"),
                         ("POST", f"/apps/{other_id}/conversations/{cid}/freeze"),
                         ("DELETE", f"/apps/{other_id}/messages/{mid}"),
                         ("GET", f"/apps/{other_id}/flags")):
        r = await admin_call(cluster, method, path, scoped.token,
                             json={} if method == "PUT" else None)
        assert r.status_code == 404, (method, path, r.text)
    # Nothing happened to the other app's data.
    assert (await theirs.ok("message.history", {"conversation_id": cid}))["messages"][0][
        "deleted"] is False
    await theirs.close()


async def test_a_ban_closes_sockets_and_blocks_token_connect_and_refresh(
        cluster: Cluster, team: dict[str, Admin]) -> None:
    user = unique("banned")
    first = await sign_in(cluster, user)
    tokens = first.json()
    sockets = [await open_socket(cluster, user, replica=i) for i in range(2)]
    r = await admin_call(cluster, "PUT", f"/apps/{cluster.app_id}/users/{user}/ban",
                         team["moderator"].token, json={"reason": "abuse"})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True and r.json()["reason"] == "abuse"
    for s in sockets:  # on both replicas, within the 2 s bound
        assert await s.closed_with(timeout=2.5) == 4003
    r = await sign_in(cluster, user)
    assert r.status_code == 403 and r.json()["error"]["code"] == "user_banned"
    assert (await refresh(cluster, tokens["refresh_token"])).status_code == 403
    for url in cluster.socket_urls:
        assert await connect_close_code(url, tokens["access_token"]) == 4003
    listed = (await admin_call(cluster, "GET", f"/apps/{cluster.app_id}/bans",
                               params={"limit": 200})).json()["bans"]
    assert user in [b["user_id"] for b in listed]
    entries = await audit(cluster, action="user.ban", app_id=cluster.app_id)
    assert any(e["target"] == user and e["actor"] == team["moderator"].id for e in entries)

    r = await admin_call(cluster, "DELETE", f"/apps/{cluster.app_id}/users/{user}/ban",
                         team["moderator"].token)
    assert r.status_code == 204
    assert (await sign_in(cluster, user)).status_code == 200

    async def connects() -> bool:
        return await connect_close_code(cluster.socket_urls[1], tokens["access_token"]) is None
    await wait_for(connects, timeout=3, what="an unbanned user connects")
    assert (await audit(cluster, action="user.unban", app_id=cluster.app_id))[0]["target"] == user


async def test_a_ban_with_a_duration_ends_by_itself(cluster: Cluster) -> None:
    user = unique("briefly-banned")
    assert (await sign_in(cluster, user)).status_code == 200
    r = await admin_call(cluster, "PUT", f"/apps/{cluster.app_id}/users/{user}/ban",
                         json={"duration_s": 1})
    assert r.status_code == 200 and r.json()["expires_at"]
    assert (await sign_in(cluster, user)).status_code == 403

    async def allowed() -> bool:
        return (await sign_in(cluster, user)).status_code == 200
    await wait_for(allowed, timeout=5, what="the ban expires")


async def test_a_mute_refuses_the_muted_member_only(cluster: Cluster) -> None:
    loud, quiet = unique("loud"), unique("quiet")
    a = await open_socket(cluster, loud, replica=0)
    b = await open_socket(cluster, quiet, replica=1)
    cid = await group(a, quiet)
    before = await send(b, cid, "before the mute")
    r = await admin_call(cluster, "PUT",
                         f"/apps/{cluster.app_id}/conversations/{cid}/mutes/{quiet}")
    assert r.status_code == 204, r.text
    await expect_refused(b, "message.send", {"conversation_id": cid, "client_msg_id": "x",
                                             "text": "muted?"}, "muted")
    await expect_refused(b, "reaction.add", {"message_id": before["id"], "emoji": "👍"}, "muted")
    await expect_refused(b, "message.edit", {"message_id": before["id"], "text": "e"}, "muted")
    await send(a, cid, "others still speak")
    await b.ok("message.history", {"conversation_id": cid})  # reading is fine
    state = (await admin_call(cluster, "GET",
                              f"/apps/{cluster.app_id}/conversations/{cid}/moderation")).json()
    assert state["muted"] == [quiet] and state["frozen"] is False
    assert (await admin_call(cluster, "DELETE", f"/apps/{cluster.app_id}/conversations/{cid}"
                                                f"/mutes/{quiet}")).status_code == 204

    async def speaks() -> bool:
        frame = await b.request("message.send", {"conversation_id": cid,
                                                 "client_msg_id": unique("u"), "text": "back"})
        return bool(frame["ok"])
    await wait_for(speaks, timeout=3, what="an unmuted member sends")
    entries = await audit(cluster, app_id=cluster.app_id, action="conversation.mute")
    assert any(e["target"] == cid and e["detail"]["user_id"] == quiet for e in entries)
    await a.close()
    await b.close()


async def test_a_freeze_refuses_everyone_until_unfrozen(cluster: Cluster) -> None:
    first, second, third = unique("f1"), unique("f2"), unique("f3")
    a = await open_socket(cluster, first, replica=0)
    b = await open_socket(cluster, second, replica=1)
    cid = await group(a, second, third)
    r = await admin_call(cluster, "POST", f"/apps/{cluster.app_id}/conversations/{cid}/freeze")
    assert r.status_code == 200 and r.json()["frozen"] is True
    for client in (a, b):
        await expect_refused(client, "message.send", {"conversation_id": cid,
                                                      "client_msg_id": "x", "text": "hi"},
                             "frozen")
    await expect_refused(a, "conversation.add_members",
                         {"conversation_id": cid, "members": [unique("f4")]}, "frozen")
    await expect_refused(a, "conversation.update", {"conversation_id": cid, "title": "t"},
                         "frozen")
    await b.ok("conversation.leave", {"conversation_id": cid})  # nobody is held in a room
    r = await admin_call(cluster, "POST", f"/apps/{cluster.app_id}/conversations/{cid}/unfreeze")
    assert r.status_code == 200 and r.json()["frozen"] is False

    async def speaks() -> bool:
        frame = await a.request("message.send", {"conversation_id": cid,
                                                 "client_msg_id": unique("u"), "text": "thaw"})
        return bool(frame["ok"])
    await wait_for(speaks, timeout=3, what="a thawed conversation accepts sends")
    entries = await audit(cluster, action="conversation.freeze", app_id=cluster.app_id)
    assert entries[0]["target"] == cid
    await a.close()
    await b.close()


async def test_a_moderator_delete_reaches_members_on_both_replicas(
        cluster: Cluster, team: dict[str, Admin]) -> None:
    sender, reader = unique("sender"), unique("reader")
    a = await open_socket(cluster, sender, replica=0)
    b = await open_socket(cluster, reader, replica=1)
    cid = await group(a, reader)
    message = await send(a, cid, "rude words")
    await b.event("message.new", message={**message})
    r = await admin_call(cluster, "DELETE", f"/apps/{cluster.app_id}/messages/{message['id']}",
                         team["moderator"].token)
    assert r.status_code == 200, r.text
    tomb = r.json()["message"]
    assert tomb["deleted"] is True and tomb["text"] == "" and tomb["id"] == message["id"]
    for client in (a, b):  # the sender and the other member, each on its own replica
        frame = await client.event("message.deleted", timeout=3)
        assert frame["data"]["message"]["id"] == message["id"]
        assert frame["data"]["message"]["deleted"] is True
        assert frame["event_seq"] > 0

    async def tombstoned() -> bool:
        page = await b.ok("message.history", {"conversation_id": cid})
        return any(m["id"] == message["id"] and m["deleted"] for m in page["messages"])
    await wait_for(tombstoned, timeout=3, what="history shows the tombstone")
    synced = await b.ok("conversation.sync", {"conversation_id": cid, "after_event_seq": 0})
    assert "message.deleted" in [e["event"] for e in synced["events"]]
    again = await admin_call(cluster, "DELETE",
                             f"/apps/{cluster.app_id}/messages/{message['id']}")
    assert again.status_code == 200 and again.json()["message"]["deleted"] is True
    entries = await audit(cluster, action="message.delete", app_id=cluster.app_id)
    assert any(e["target"] == message["id"] for e in entries)
    await a.close()
    await b.close()
