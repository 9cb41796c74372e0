"""Flags against a real cluster: members report messages with ``message.flag`` over the socket,
moderators work the queue through the admin API (docs/moderation.md "Flags")."""

from __future__ import annotations

from typing import Any

from tests.chatclient import Client, Cluster, group
from tests.integration.adminclient import audit
from tests.integration.conftest import unique
from tests.integration.moderationclient import admin_call, every_page, open_socket


async def send(client: Client, cid: str, text: str) -> dict[str, Any]:
    data = await client.ok("message.send", {"conversation_id": cid, "client_msg_id": unique("m"),
                                            "text": text})
    return dict(data["message"])


async def queue(cluster: Cluster, status: str = "open") -> list[dict[str, Any]]:
    """The app's flags with ``status``, two per page (so paging is exercised)."""
    return await every_page(cluster, f"/apps/{cluster.app_id}/flags", "flags",
                            status=status, limit=2)


async def test_members_flag_once_and_bad_flags_get_clear_errors(cluster: Cluster) -> None:
    sender, reader, outsider = unique("sender"), unique("reader"), unique("outsider")
    a, b = await open_socket(cluster, sender), await open_socket(cluster, reader, replica=1)
    c = await open_socket(cluster, outsider)
    cid = await group(a, reader)
    message = await send(a, cid, "buy cheap watches")
    flagged = (await b.ok("message.flag", {"message_id": message["id"], "reason": "spam",
                                           "note": "third time today"}))["flag"]
    assert {k: flagged[k] for k in ("message_id", "conversation_id", "sender_id", "flagged_by",
                                    "reason", "note", "status")} == {
        "message_id": message["id"], "conversation_id": cid, "sender_id": sender,
        "flagged_by": reader, "reason": "spam", "note": "third time today", "status": "open"}
    again = (await b.ok("message.flag", {"message_id": message["id"]}))["flag"]
    assert again == flagged, "flagging again finds the same flag, unchanged"

    for who, data, code, word in (
            (a, {"message_id": message["id"]}, "bad_request", "message_id: you cannot flag"),
            (c, {"message_id": message["id"]}, "not_found", "not found"),
            (b, {"message_id": "m_nope"}, "not_found", "message not found"),
            (b, {"message_id": message["id"], "reason": "boring"}, "bad_request", "reason"),
            (b, {"message_id": message["id"], "note": "x" * 501}, "bad_request", "note"),
            (b, {"message_id": 7}, "bad_request", "message_id")):
        error = await who.error("message.flag", data)
        assert error["code"] == code and word in error["message"], (data, error)
    await a.ok("message.delete", {"message_id": (mine := await send(a, cid, "oops"))["id"]})
    # b is on the other replica: it knows of the delete once the event reached it (a flag
    # racing the delete is accepted, and harmless: the message is gone either way).
    seen = await b.event("message.deleted", timeout=5)
    assert seen["data"]["message"]["id"] == mine["id"]
    error = await b.error("message.flag", {"message_id": mine["id"]})
    assert error == {"code": "bad_request", "message": "message_id: the message is deleted"}
    for client in (a, b, c):
        await client.close()


async def test_a_removed_flag_deletes_the_message_and_closes_all_its_flags(
        cluster: Cluster) -> None:
    sender, r1, r2 = unique("sender"), unique("r1"), unique("r2")
    a = await open_socket(cluster, sender)
    b, c = await open_socket(cluster, r1, replica=1), await open_socket(cluster, r2)
    cid = await group(a, r1, r2)
    rude, fine = await send(a, cid, "rude words"), await send(a, cid, "a fair point")
    first = (await b.ok("message.flag", {"message_id": rude["id"],
                                         "reason": "harassment"}))["flag"]
    await c.ok("message.flag", {"message_id": rude["id"]})
    other = (await c.ok("message.flag", {"message_id": fine["id"]}))["flag"]
    mine = [f for f in await queue(cluster) if f["conversation_id"] == cid]
    assert (mine[0]["message_id"], mine[0]["flagged_by"]) == (rude["id"], r1), "oldest first"
    assert {(f["message_id"], f["flagged_by"]) for f in mine} == {
        (rude["id"], r1), (rude["id"], r2), (fine["id"], r2)}

    r = await admin_call(cluster, "POST", f"/apps/{cluster.app_id}/flags/{first['id']}/resolve",
                         json={"action": "remove"})
    assert r.status_code == 200, r.text
    assert r.json()["resolved"] == 2 and r.json()["flag"]["status"] == "removed"
    assert r.json()["flag"]["resolved_by"] == "root"
    for client in (a, b, c):  # every member, on both replicas
        frame = await client.event("message.deleted", timeout=3)
        assert frame["data"]["message"]["id"] == rude["id"]
    still_open = [f["id"] for f in await queue(cluster) if f["conversation_id"] == cid]
    assert still_open == [other["id"]]
    removed = [f for f in await queue(cluster, "removed") if f["conversation_id"] == cid]
    assert {f["flagged_by"] for f in removed} == {r1, r2}

    r = await admin_call(cluster, "POST", f"/apps/{cluster.app_id}/flags/{other['id']}/resolve",
                         json={"action": "dismiss"})
    assert r.json()["resolved"] == 1 and r.json()["flag"]["status"] == "dismissed"
    history = await b.ok("message.history", {"conversation_id": cid})
    assert [m["deleted"] for m in history["messages"] if m["id"] == fine["id"]] == [False]
    again = await admin_call(cluster, "POST",
                             f"/apps/{cluster.app_id}/flags/{first['id']}/resolve",
                             json={"action": "dismiss"})
    assert again.json()["resolved"] == 0 and again.json()["flag"]["status"] == "removed"
    actions = {e["action"] for e in await audit(cluster, app_id=cluster.app_id)
               if e["target"] in (rude["id"], fine["id"])}
    assert {"flag.remove", "flag.dismiss"} <= actions
    export = await admin_call(cluster, "GET", f"/apps/{cluster.app_id}/users/{r2}/export")
    assert {f["message_id"] for f in export.json()["flags"]} == {rude["id"], fine["id"]}
    for client in (a, b, c):
        await client.close()


async def test_the_queue_refuses_bad_input_and_other_apps_flags(cluster: Cluster) -> None:
    app = cluster.app_id
    for params in ({"status": "maybe"}, {"limit": 0}, {"cursor": "garbage"}):
        r = await admin_call(cluster, "GET", f"/apps/{app}/flags", params=params)
        assert r.status_code in (400, 422) and r.json()["error"]["code"] == "bad_request", r.text
    r = await admin_call(cluster, "POST", f"/apps/{app}/flags/flg_nope/resolve",
                         json={"action": "remove"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await admin_call(cluster, "POST", f"/apps/{app}/flags/flg_nope/resolve",
                         json={"action": "burn"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_request"

    other = await cluster.new_app("flags-other")
    stranger, friend = unique("stranger"), unique("friend")
    theirs = await open_socket(cluster, stranger, app=other)
    their_friend = await open_socket(cluster, friend, app=other)
    cid = await group(theirs, friend)
    mid = (await send(theirs, cid, "elsewhere"))["id"]
    flag = (await their_friend.ok("message.flag", {"message_id": mid}))["flag"]
    r = await admin_call(cluster, "POST", f"/apps/{app}/flags/{flag['id']}/resolve",
                         json={"action": "remove"})
    assert r.status_code == 404, "another app's flag is not found through this app"
    assert flag["id"] not in [f["id"] for f in await queue(cluster, "all")]
    history = await their_friend.ok("message.history", {"conversation_id": cid})
    assert history["messages"][0]["deleted"] is False
    await theirs.close()
    await their_friend.close()
