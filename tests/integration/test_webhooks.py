"""Webhooks end to end: a real cluster's consumers deliver to a real HTTP receiver on loopback,
signed, retried with one delivery id, dead-lettered and replayed; redirects are not followed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from typing import Any

from tests.chatclient import Client, Cluster, group, poll, wait_for
from tests.integration.hooks import (
    Admin,
    Receiver,
    admin,
    consumers_pid,
    hooks_cluster,
    receiver,
    verification_recipe,
)

__all__ = ["admin", "hooks_cluster", "receiver"]  # fixtures


async def signed_in(cluster: Cluster, admin: Admin, user: str) -> Client:
    tokens = await cluster.token(user, app_id=admin.app_id, app_secret=admin.app_secret)
    return await Client.connect(cluster.socket_urls[0], tokens["access_token"], user)


def path(name: str) -> str:
    return f"/{name}/{uuid.uuid4().hex[:8]}"


async def one_message(cluster: Cluster, admin: Admin) -> str:
    """alice sends one message to a new group; its id."""
    alice = await signed_in(cluster, admin, "alice")
    try:
        cid = await group(alice, "bob")
        sent = await alice.ok("message.send", {"conversation_id": cid, "client_msg_id": "1",
                                               "text": "hello"})
        return str(sent["message"]["id"])
    finally:
        await alice.close()


async def hits(receiver: Receiver, where: str, count: int, timeout: float = 15) -> list[Any]:
    async def enough() -> list[Any] | None:
        found = receiver.at(where)
        return found if len(found) >= count else None
    return await wait_for(enough, timeout, what=f"{count} deliveries at {where}")


async def test_sent_edited_and_deleted_messages_arrive_signed(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("ok")
    hook = await admin.create_webhook(receiver.url + where, [
        "message.sent", "message.edited", "message.deleted"])
    assert hook["secret"].startswith("whsec_")
    alice = await signed_in(hooks_cluster, admin, "alice")
    cid = await group(alice, "bob")
    sent = await alice.ok("message.send", {"conversation_id": cid, "client_msg_id": "m1",
                                           "text": "hello"})
    mid = sent["message"]["id"]
    await alice.ok("message.edit", {"message_id": mid, "text": "hello again"})
    await alice.ok("message.delete", {"message_id": mid})
    await alice.close()

    got = await hits(receiver, where, 3)
    verify_signature = verification_recipe()
    bodies = {}
    for hit in got:
        assert hit.headers["Content-Type"] == "application/json"
        assert verify_signature(hook["secret"], hit.headers["X-Chat-Signature"], hit.body)
        assert not verify_signature("whsec_wrong", hit.headers["X-Chat-Signature"], hit.body)
        assert not verify_signature(hook["secret"], hit.headers["X-Chat-Signature"],
                                    hit.body + b" ")
        body = json.loads(hit.body)
        assert hit.headers["X-Chat-Event"] == body["type"]
        assert hit.headers["X-Chat-Attempt"] == "1"
        assert body["app_id"] == admin.app_id and body["conversation_id"] == cid
        bodies[body["type"]] = body
    assert bodies["message.sent"]["data"]["message"]["id"] == mid
    assert bodies["message.sent"]["data"]["message"]["text"] == "hello"
    assert bodies["message.edited"]["data"]["text"] == "hello again"
    assert bodies["message.deleted"]["data"]["message_id"] == mid
    seqs = [bodies[t]["event_seq"] for t in ("message.sent", "message.edited",
                                             "message.deleted")]
    assert seqs == sorted(seqs)
    # Not subscribed: no conversation.updated or member events reached this endpoint.
    assert {h.headers["X-Chat-Event"] for h in receiver.at(where)} == {
        "message.sent", "message.edited", "message.deleted"}


async def test_a_failing_receiver_gets_the_same_delivery_id_when_it_recovers(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("flaky")
    receiver.script[where] = [500, 200]
    await admin.create_webhook(receiver.url + where, ["message.sent"])
    await one_message(hooks_cluster, admin)
    first, second = await hits(receiver, where, 2)
    assert first.headers["X-Chat-Delivery"] == second.headers["X-Chat-Delivery"]
    assert (first.headers["X-Chat-Attempt"], second.headers["X-Chat-Attempt"]) == ("1", "2")
    assert first.body == second.body
    delivery = await poll(lambda: admin.delivery(first.headers["X-Chat-Delivery"]),
                          lambda d: d["status"] == "delivered")
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2


async def test_a_receiver_that_times_out_is_retried(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("slow")
    receiver.script[where] = [("sleep", 3.0), 200]  # the timeout is 1 s
    await admin.create_webhook(receiver.url + where, ["message.sent"])
    await one_message(hooks_cluster, admin)
    first, second = await hits(receiver, where, 2)
    assert first.headers["X-Chat-Delivery"] == second.headers["X-Chat-Delivery"]
    delivery = await poll(lambda: admin.delivery(first.headers["X-Chat-Delivery"]),
                          lambda d: d["status"] == "delivered")
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2


async def test_429_retry_after_is_honoured(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("limited")
    receiver.script[where] = [("retry-after", 1), 200]
    await admin.create_webhook(receiver.url + where, ["message.sent"])
    await one_message(hooks_cluster, admin)
    first, second = await hits(receiver, where, 2)
    # Without Retry-After the second try would come 0.1-0.2 s later.
    assert second.at - first.at >= 0.9
    assert first.headers["X-Chat-Delivery"] == second.headers["X-Chat-Delivery"]


async def test_after_the_last_try_a_dead_letter_which_replay_delivers(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("down")
    receiver.script[where] = [503]
    await admin.create_webhook(receiver.url + where, ["message.sent"])
    await one_message(hooks_cluster, admin)
    tries = await hits(receiver, where, 3)
    delivery_id = tries[0].headers["X-Chat-Delivery"]

    async def dead_letters() -> list[dict[str, Any]]:
        r = await admin.http.get(admin.path("/webhooks/dead-letters"))
        assert r.status_code == 200, r.text
        return list(r.json()["deliveries"])

    dead = await poll(dead_letters, lambda d: len(d) == 1)
    assert [d["id"] for d in dead] == [delivery_id]
    assert dead[0]["attempts"] == 3 and dead[0]["last_status"] == 503
    assert dead[0]["payload"]["type"] == "message.sent"
    assert len(receiver.at(where)) == 3  # no fourth try on its own

    receiver.script[where] = [200]
    r = await admin.http.post(admin.path(f"/webhooks/dead-letters/{delivery_id}/replay"))
    assert r.status_code == 202, r.text
    assert r.json()["id"] == delivery_id and r.json()["status"] == "pending"
    [replayed] = (await hits(receiver, where, 4))[3:]
    assert replayed.headers["X-Chat-Delivery"] == delivery_id
    assert replayed.headers["X-Chat-Attempt"] == "1"
    delivered = await poll(lambda: admin.delivery(delivery_id),
                           lambda d: d["status"] == "delivered")
    assert delivered["status"] == "delivered"
    assert await dead_letters() == []
    again = await admin.http.post(admin.path(f"/webhooks/dead-letters/{delivery_id}/replay"))
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


async def test_a_redirect_to_loopback_is_not_followed(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where, target = path("redirect"), path("internal")
    receiver.script[where] = [("redirect", target)]
    await admin.create_webhook(receiver.url + where, ["message.sent"])
    await one_message(hooks_cluster, admin)
    [hit] = await hits(receiver, where, 1)
    delivery = await poll(lambda: admin.delivery(hit.headers["X-Chat-Delivery"]),
                          lambda d: d["status"] == "dead")
    assert delivery["status"] == "dead" and delivery["attempts"] == 1
    assert delivery["last_status"] == 302 and "redirect" in delivery["last_error"]
    assert receiver.at(target) == []


async def test_member_changes_and_conversation_updates(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("members")
    await admin.create_webhook(receiver.url + where, [
        "conversation.updated", "member.added", "member.removed"])
    alice = await signed_in(hooks_cluster, admin, "alice")
    cid = await group(alice, "bob")
    await alice.ok("conversation.add_members", {"conversation_id": cid, "members": ["carol"]})
    await alice.ok("conversation.remove_members", {"conversation_id": cid, "members": ["bob"]})
    await alice.close()
    got = await hits(receiver, where, 6)
    events = sorted((json.loads(h.body) for h in got), key=lambda b: (b["event_seq"], b["type"]))
    assert [(e["type"], e["data"].get("members")) for e in events] == [
        ("conversation.updated", None), ("member.added", ["alice", "bob"]),
        ("conversation.updated", None), ("member.added", ["carol"]),
        ("conversation.updated", None), ("member.removed", ["bob"])]
    assert events[-2]["data"]["conversation"]["members"] == ["alice", "carol"]


async def test_bans_and_unbans_arrive_as_user_events(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("bans")
    hook = await admin.create_webhook(receiver.url + where, ["user.banned", "user.unbanned"])
    await (await signed_in(hooks_cluster, admin, "mallory")).close()
    banned = await admin.http.put(admin.path("/users/mallory/ban"),
                                  json={"reason": "spam", "duration_s": 3600})
    assert banned.status_code == 200, banned.text
    assert (await admin.http.delete(admin.path("/users/mallory/ban"))).status_code == 204
    got = await hits(receiver, where, 2)
    verify_signature = verification_recipe()
    assert all(verify_signature(hook["secret"], h.headers["X-Chat-Signature"], h.body)
               for h in got)
    events = {json.loads(h.body)["type"]: json.loads(h.body) for h in got}
    assert set(events) == {"user.banned", "user.unbanned"}
    ban, unban = events["user.banned"], events["user.unbanned"]
    assert ban["app_id"] == admin.app_id and ban["conversation_id"] is None
    assert ban["data"] == {"user_id": "mallory", "by": "root", "at": banned.json()["at"],
                           "reason": "spam", "expires_at": banned.json()["expires_at"]}
    assert unban["data"]["user_id"] == "mallory" and unban["data"]["reason"] is None
    assert ban["id"] != unban["id"] and ban["created_at"] <= unban["created_at"]


async def test_a_flag_arrives_once_however_often_it_is_repeated(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    where = path("flags")
    await admin.create_webhook(receiver.url + where, ["message.flagged"])
    alice, bob = (await signed_in(hooks_cluster, admin, "alice"),
                  await signed_in(hooks_cluster, admin, "bob"))
    cid = await group(alice, "bob")
    mid = (await alice.ok("message.send", {"conversation_id": cid, "client_msg_id": "f1",
                                           "text": "spam spam"}))["message"]["id"]
    for _ in range(3):  # each repeat publishes again; the outbox keeps one delivery
        flag = (await bob.ok("message.flag", {"message_id": mid, "reason": "spam"}))["flag"]
    got = await hits(receiver, where, 1)
    body = json.loads(got[0].body)
    assert body["type"] == "message.flagged" and body["conversation_id"] == cid
    assert body["data"]["flag"] == flag
    await asyncio.sleep(1.5)  # time for a duplicate to show up, if there were one
    assert len(receiver.at(where)) == 1
    await alice.close()
    await bob.close()


async def test_endpoint_routes_and_their_errors(hooks_cluster: Cluster, admin: Admin) -> None:
    http = admin.http
    created = await admin.create_webhook("https://example.com/hook", ["message.sent"])
    wid = created["id"]
    listed = (await http.get(admin.path("/webhooks"))).json()["webhooks"]
    assert [w["id"] for w in listed] == [wid] and "secret" not in listed[0]
    r = await http.patch(admin.path(f"/webhooks/{wid}"),
                         json={"event_types": ["message.deleted"], "enabled": False})
    assert r.status_code == 200 and r.json()["event_types"] == ["message.deleted"]
    assert r.json()["enabled"] is False and r.json()["url"] == "https://example.com/hook"
    rotated = (await http.post(admin.path(f"/webhooks/{wid}/secret/rotate"))).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    assert (await http.get(admin.path(f"/webhooks/{wid}"))).json()["enabled"] is False

    bad = [(await http.post(admin.path("/webhooks"), json={"url": "ftp://x.example/a",
                                                            "event_types": ["message.sent"]})),
           (await http.post(admin.path("/webhooks"), json={"url": "https://x.example/a",
                                                            "event_types": ["nope"]})),
           (await http.post(admin.path("/webhooks"), json={"url": "https://x.example/a",
                                                            "event_types": []})),
           (await http.post(admin.path("/webhooks"), content=b"{not json",
                            headers={"content-type": "application/json"}))]
    for r in bad:
        assert r.status_code in (400, 422), r.text
        assert set(r.json()["error"]) == {"code", "message"}
    r = await http.get(admin.path("/webhooks/deliveries"), params={"cursor": "%%%"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    missing = [await http.get(admin.path("/webhooks/wh_nope")),
               await http.get("/api/v1/admin/apps/app_nope/webhooks"),
               await http.get(admin.path("/webhooks/deliveries/dlv_nope")),
               await http.post(admin.path("/webhooks/dead-letters/dlv_nope/replay"))]
    for r in missing:
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    # Another app cannot see this app's endpoint by id.
    other_id, _ = await hooks_cluster.new_app("other")
    r = await http.get(f"/api/v1/admin/apps/{other_id}/webhooks/{wid}")
    assert r.status_code == 404
    unauthenticated = await http.get(admin.path("/webhooks"), headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    wrong = await http.get(admin.path("/webhooks"), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401

    openapi = (await http.get("/openapi.json")).json()
    for documented in ("/api/v1/admin/apps/{app_id}/webhooks",
                       "/api/v1/admin/apps/{app_id}/webhooks/{endpoint_id}",
                       "/api/v1/admin/apps/{app_id}/webhooks/dead-letters/{delivery_id}/replay",
                       "/api/v1/admin/apps/{app_id}/usage"):
        assert documented in openapi["paths"], documented
    assert "WebhookCreated" in openapi["components"]["schemas"]

    audit = await http.get("/api/v1/admin/audit", params={"app_id": admin.app_id})
    assert audit.status_code == 200, audit.text
    actions = {e["action"] for e in audit.json()["entries"]}
    assert {"webhook.create", "webhook.update", "webhook.secret.rotate"} <= actions

    assert (await http.delete(admin.path(f"/webhooks/{wid}"))).status_code == 204
    assert (await http.delete(admin.path(f"/webhooks/{wid}"))).status_code == 404
    assert (await http.get(admin.path("/webhooks"))).json()["webhooks"] == []


async def test_deliveries_survive_a_restart_of_the_consumers(
        hooks_cluster: Cluster, admin: Admin, receiver: Receiver) -> None:
    """Pending deliveries live in the outbox, not in the consumers' memory."""
    where = path("restart")
    receiver.script[where] = [503, 503, 200]
    await admin.create_webhook(receiver.url + where, ["message.sent"])
    await one_message(hooks_cluster, admin)
    [first] = await hits(receiver, where, 1)
    # SIGKILL the consumers between two tries; the supervisor restarts them on the same state.
    os.kill(consumers_pid(hooks_cluster), signal.SIGKILL)
    got = await hits(receiver, where, 3, timeout=30)
    assert {h.headers["X-Chat-Delivery"] for h in got} == {first.headers["X-Chat-Delivery"]}
