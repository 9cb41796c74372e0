"""Compliance end to end: export of one user, erasure (tombstones, no display name, sessions
revoked, sockets closed), and the retention job of the consumers on a cluster whose days last
one second (CHAT_RETENTION_DAY_S)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chatclient import (
    Cluster,
    all_history,
    embedded_env,
    forget_cluster,
    group,
    production_env,
    start_cluster,
    wait_for,
)
from tests.integration.adminclient import audit, create_admin
from tests.integration.conftest import _backends, unique
from tests.integration.moderationclient import admin_call, open_socket, sign_in


async def test_export_holds_everything_about_the_user(cluster: Cluster) -> None:
    user, other = unique("exported"), unique("peer")
    a = await open_socket(cluster, user, display_name="Exported Person")
    b = await open_socket(cluster, other, replica=1)
    cid = await group(a, other, title="export me")
    sent = [(await a.ok("message.send", {"conversation_id": cid, "client_msg_id": unique("c"),
                                         "text": f"mine {i}"}))["message"] for i in range(3)]
    await b.ok("message.send", {"conversation_id": cid, "client_msg_id": "theirs",
                                "text": "not mine"})
    await a.ok("receipt.read", {"conversation_id": cid, "seq": sent[-1]["seq"]})
    path = f"/apps/{cluster.app_id}/users/{user}/export"

    async def complete() -> dict[str, Any] | None:
        r = await admin_call(cluster, "GET", path)
        assert r.status_code == 200, r.text
        body = dict(r.json())
        done = len(body["messages"]) == 3 and body["receipts"]
        return body if done else None
    export = await wait_for(complete, timeout=5, what="the export holds every message")
    assert export["profile"]["user_id"] == user
    assert export["profile"]["display_name"] == "Exported Person"
    assert [m["text"] for m in export["messages"]] == [
        m["text"] for m in sorted(sent, key=lambda m: m["id"])]
    assert [c["id"] for c in export["conversations"]] == [cid]
    assert {"conversation_id": cid, "kind": "read",
            "seq": sent[-1]["seq"]} in export["receipts"]
    assert len(export["sessions"]) == 1
    viewer = await create_admin(cluster, "viewer")
    assert (await admin_call(cluster, "GET", path, viewer.token)).status_code == 403
    entries = await audit(cluster, action="user.export", app_id=cluster.app_id)
    assert entries[0]["target"] == user
    await a.close()
    await b.close()


async def test_erasure_tombstones_messages_and_removes_personal_data(cluster: Cluster) -> None:
    user, other = unique("erased"), unique("witness")
    a = await open_socket(cluster, user, display_name="Erased Person")
    b = await open_socket(cluster, other, replica=1)
    cid = await group(a, other)
    sent = [(await a.ok("message.send", {"conversation_id": cid, "client_msg_id": unique("c"),
                                         "text": f"secret {i}"}))["message"] for i in range(3)]
    kept = (await b.ok("message.send", {"conversation_id": cid, "client_msg_id": "kept",
                                        "text": "stays"}))["message"]
    assert (await b.ok("user.get", {"users": [user]}))["users"][user]["display_name"]

    async def persisted() -> bool:
        return len(await all_history(b, cid)) == 4
    await wait_for(persisted, timeout=5, what="the messages are stored")
    r = await admin_call(cluster, "POST", f"/apps/{cluster.app_id}/users/{user}/erase")
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": user, "messages_tombstoned": 3, "sessions_revoked": 1}
    assert await a.closed_with(timeout=2.5) == 4001
    deleted = {(await b.event("message.deleted", timeout=3))["data"]["message"]["id"]
               for _ in sent}
    assert deleted == {m["id"] for m in sent}

    async def tombstoned() -> bool:
        history = {m["id"]: m for m in await all_history(b, cid)}
        return all(history[m["id"]]["deleted"] and history[m["id"]]["text"] == ""
                   for m in sent) and history[kept["id"]]["text"] == "stays"
    await wait_for(tombstoned, timeout=5, what="the erased user's messages are tombstones")
    assert (await b.ok("user.get", {"users": [user]}))["users"][user]["display_name"] is None
    profile = (await admin_call(cluster, "GET", f"/apps/{cluster.app_id}/users/{user}")).json()
    assert profile["display_name"] is None
    sessions = (await admin_call(cluster, "GET", f"/apps/{cluster.app_id}/users/{user}/"
                                                 "sessions")).json()["sessions"]
    assert all(s["revoked_at"] and s["user_agent"] is None and s["ip"] is None
               for s in sessions)
    export = (await admin_call(cluster, "GET",
                               f"/apps/{cluster.app_id}/users/{user}/export")).json()
    assert all(m["deleted"] and m["text"] == "" for m in export["messages"])
    entries = await audit(cluster, action="user.erase", app_id=cluster.app_id)
    assert entries[0]["target"] == user
    assert entries[0]["detail"] == {"messages_tombstoned": 3, "sessions_revoked": 1}
    # DELETE is the same erasure; again, it finds nothing left to do.
    again = await admin_call(cluster, "DELETE", f"/apps/{cluster.app_id}/users/{user}")
    assert again.status_code == 200 and again.json()["messages_tombstoned"] == 0
    await b.close()


@pytest.fixture(scope="module", params=_backends())
def short_days(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose retention days last one second and whose job runs every 0.3 s."""
    base = production_env("ret") if request.param == "production" else embedded_env()
    env = {**base, "CHAT_RETENTION_DAY_S": "1", "CHAT_RETENTION_INTERVAL_S": "0.3"}
    running = start_cluster(Path(tmp_path_factory.mktemp(f"ret-{request.param}")) / "state",
                            env=env)
    yield running
    running.stop()
    if request.param == "production":
        asyncio.run(forget_cluster(env))


async def test_retention_tombstones_old_messages_once(short_days: Cluster) -> None:
    cluster = short_days
    user, other = unique("old"), unique("reader")
    a = await open_socket(cluster, user)
    b = await open_socket(cluster, other, replica=1)
    cid = await group(a, other)
    old = (await a.ok("message.send", {"conversation_id": cid, "client_msg_id": "old",
                                       "text": "ancient"}))["message"]
    r = await admin_call(cluster, "PUT", f"/apps/{cluster.app_id}/settings",
                         json={"message_retention_days": 2})
    assert r.status_code == 200, r.text
    # Two "days" (2 s) later the job tombstones it; members hear of it like any delete.
    frame = await b.event("message.deleted", timeout=8)
    assert frame["data"]["message"]["id"] == old["id"]
    assert frame["data"]["message"]["deleted"] is True

    async def tombstoned() -> bool:
        history = await all_history(b, cid)
        return bool(history) and history[0]["deleted"] and history[0]["text"] == ""
    await wait_for(tombstoned, timeout=5, what="history shows the expired message's tombstone")
    await b.no_event("message.deleted", within=1.5)  # idempotent: removed once
    synced = await b.ok("conversation.sync", {"conversation_id": cid, "after_event_seq": 0})
    assert [e["event"] for e in synced["events"]].count("message.deleted") == 1
    assert (await sign_in(cluster, user)).status_code == 200
    await a.close()
    await b.close()
