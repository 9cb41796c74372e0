"""Usage per app and day, end to end: messages, active users, peak connections, tokens and
webhook deliveries, counted once each even across a restart of the consumers; the route's
validation; the consumers' Prometheus metrics."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.chatclient import Client, Cluster, group, poll
from tests.integration.hooks import Admin, Receiver, admin, consumers_pid, hooks_cluster, receiver

__all__ = ["admin", "hooks_cluster", "receiver"]  # fixtures


async def usage(admin: Admin, **params: str) -> dict[str, Any]:
    r = await admin.http.get(admin.path("/usage"), params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def today(report: dict[str, Any]) -> dict[str, Any]:
    day = datetime.now(UTC).date().isoformat()
    [found] = [d for d in report["days"] if d["day"] == day]
    return dict(found)


async def test_usage_counts_each_thing_once(hooks_cluster: Cluster, admin: Admin,
                                            receiver: Receiver) -> None:
    receiver.script["/usage"] = [500, 200]  # one failed attempt, then all delivered
    await admin.create_webhook(receiver.url + "/usage", ["message.sent"])
    secret = admin.app_secret
    tokens = {u: await hooks_cluster.token(u, app_id=admin.app_id, app_secret=secret)
              for u in ("alice", "bob")}
    async with httpx.AsyncClient(base_url=hooks_cluster.gateway_url, timeout=10) as http:
        r = await http.post("/api/v1/auth/refresh",
                            json={"refresh_token": tokens["bob"]["refresh_token"]})
        assert r.status_code == 200
    urls = hooks_cluster.socket_urls
    clients = [await Client.connect(urls[0], tokens["alice"]["access_token"], "alice"),
               await Client.connect(urls[1 % len(urls)], tokens["alice"]["access_token"],
                                    "alice"),
               await Client.connect(urls[0], tokens["bob"]["access_token"], "bob")]
    alice, _, bob = clients
    cid = await group(alice, "bob")
    for i, sender in enumerate((alice, alice, bob)):
        await sender.ok("message.send", {"conversation_id": cid, "client_msg_id": f"u{i}",
                                         "text": f"m{i}"})
    # The same client_msg_id again: the same message, not a second one.
    await bob.ok("message.send", {"conversation_id": cid, "client_msg_id": "u2", "text": "m2"})

    expected = {"messages_sent": 3, "active_users": 2, "tokens_issued": 3,
                "webhook_deliveries": 3, "webhook_failures": 1}

    def settled(report: dict[str, Any]) -> bool:
        day = today(report)
        return all(day[k] == v for k, v in expected.items()) and day["peak_connections"] >= 3

    report = await poll(lambda: usage(admin), settled, timeout=20)
    day = today(report)
    assert {k: day[k] for k in expected} == expected
    assert day["peak_connections"] == 3
    assert report["totals"]["messages_sent"] == 3 and report["totals"]["peak_connections"] == 3
    assert len(report["days"]) == 30 and report["to"] == day["day"]

    # Kill the consumers: whatever they re-read on restart is not counted again.
    os.kill(consumers_pid(hooks_cluster), signal.SIGKILL)
    await bob.ok("message.send", {"conversation_id": cid, "client_msg_id": "u3", "text": "m3"})
    expected |= {"messages_sent": 4, "webhook_deliveries": 4}
    report = await poll(lambda: usage(admin), settled, timeout=30)
    assert {k: today(report)[k] for k in expected} == expected
    for c in clients:
        await c.close()

    # The restarted consumers' metrics carry this app's new counts.
    consumers_url = (hooks_cluster.state_dir / "run" / "consumers.url").read_text().strip()

    async def metrics() -> str:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(f"{consumers_url}/metrics")).text

    text = await poll(metrics, lambda t: f'app="{admin.app_id}"' in t, timeout=10)
    assert f'chat_usage_total{{app="{admin.app_id}",metric="messages_sent"}} 1.0' in text
    assert "chat_webhook_attempts_total" in text and "chat_usage_connections" in text


async def test_usage_route_validation(hooks_cluster: Cluster, admin: Admin) -> None:
    report = await usage(admin, **{"from": "2026-01-01", "to": "2026-01-03"})
    assert [d["day"] for d in report["days"]] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert report["from"] == "2026-01-01" and report["totals"]["messages_sent"] == 0
    for params in ({"from": "2026-13-01"}, {"to": "yesterday"},
                   {"from": "2026-01-05", "to": "2026-01-01"},
                   {"from": "2020-01-01", "to": "2026-01-01"}):
        r = await admin.http.get(admin.path("/usage"), params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["code"] == "bad_request"
    r = await admin.http.get("/api/v1/admin/apps/app_nope/usage")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await admin.http.get(admin.path("/usage"), headers={"Authorization": ""})
    assert r.status_code == 401
