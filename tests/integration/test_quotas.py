"""Per-app and per-user quotas (docs/admin.md, "Quotas"): the token route answers 429 with
Retry-After, message.send answers rate_limited with retry_after_ms, across both replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.chatclient import Client, Cluster, all_history, group, poll
from tests.integration.adminclient import call

WINDOW_S = 60


async def fresh_window() -> None:
    """Quotas count in fixed one-minute windows: start well inside one."""
    into = time.time() % WINDOW_S
    if into > WINDOW_S - 15:
        await asyncio.sleep(WINDOW_S - into + 0.2)


async def configured_app(cluster: Cluster, **settings: int) -> tuple[str, str]:
    app_id, secret = await cluster.new_app("quota")
    r = await call(cluster, "PUT", f"/apps/{app_id}/settings", cluster.admin_token,
                   json=settings)
    assert r.status_code == 200, r.text
    return app_id, secret


async def token(cluster: Cluster, app: tuple[str, str], user: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=20) as http:
        return await http.post("/api/v1/auth/sdk/token", json={
            "app_id": app[0], "app_secret": app[1], "user_external_id": user})


async def test_token_route_quotas_per_user_and_per_app(cluster: Cluster, users) -> None:
    app = await configured_app(cluster, token_requests_per_minute=5,
                               token_requests_per_minute_per_user=2)
    alice, bob, carol = users("alice", "bob", "carol")
    await fresh_window()
    assert [(await token(cluster, app, alice)).status_code for _ in range(2)] == [200, 200]
    refused = await token(cluster, app, alice)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= WINDOW_S
    # bob has his own quota; the app's (5 per minute) is shared by everyone.
    assert [(await token(cluster, app, bob)).status_code for _ in range(2)] == [200, 200]
    assert (await token(cluster, app, carol)).status_code == 200  # the app's 5th
    spent = await token(cluster, app, carol)
    assert spent.status_code == 429 and "Retry-After" in spent.headers
    # The default app is untouched by this app's quota.
    assert (await cluster.token(users("dave")[0]))["access_token"]


async def sign_in(cluster: Cluster, app: tuple[str, str], user: str, replica: int) -> Client:
    r = await token(cluster, app, user)
    assert r.status_code == 200, r.text
    return await Client.connect(cluster.socket_urls[replica % len(cluster.socket_urls)],
                                r.json()["access_token"], user)


async def test_message_quotas_per_user_and_per_app(cluster: Cluster, users) -> None:
    app = await configured_app(cluster, messages_per_minute=5, messages_per_minute_per_user=3)
    alice, bob = users("alice", "bob")
    await fresh_window()
    a = await sign_in(cluster, app, alice, 0)
    b = await sign_in(cluster, app, bob, 1)
    try:
        cid = await group(a, bob)

        async def send(c: Client, n: int) -> dict[str, Any]:
            return await c.request("message.send", {"conversation_id": cid, "text": f"m{n}",
                                                    "client_msg_id": f"{c.user}-{n}"})

        sent = [await send(a, n) for n in range(4)]
        assert [r["ok"] for r in sent] == [True, True, True, False], sent
        assert sent[3]["error"]["code"] == "rate_limited"
        assert 1 <= sent[3]["error"]["retry_after_ms"] <= WINDOW_S * 1000
        # bob (on the other replica) has his own 3, but the app has only 2 left of its 5.
        from_bob = [await send(b, n) for n in range(3)]
        assert [r["ok"] for r in from_bob] == [True, True, False], from_bob
        assert from_bob[2]["error"]["code"] == "rate_limited"
        # Every ok'd send is stored (the store may lag a little), and nothing refused is.
        stored = await poll(lambda: all_history(a, cid), lambda ms: len(ms) >= 5)
        assert sorted(m["client_msg_id"] for m in stored) == sorted(
            [f"{alice}-{n}" for n in range(3)] + [f"{bob}-{n}" for n in range(2)])
    finally:
        await a.close()
        await b.close()
