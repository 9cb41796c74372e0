"""The gateway's routes (PROTOCOL.md §1), against the running cluster."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets

from tests.chatclient import Client, Cluster


async def post(cluster: Cluster, path: str, json: object = None,
               token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        return await http.post(path, json=json, headers=headers)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url)


async def test_sdk_token_answers_the_contract_shape_with_the_live_replicas(
        cluster: Cluster) -> None:
    body = await cluster.token("gw-shape")
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user",
                         "socket_urls", "socket_connection_guide"}
    assert body["token_type"] == "Bearer"
    assert 60 <= body["expires_in"] <= 3600
    assert body["user"]["external_id"] == "gw-shape" and body["user"]["id"]
    assert sorted(body["socket_urls"]) == sorted(cluster.socket_urls)
    assert all(u.startswith("ws://") for u in body["socket_urls"])


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(
        cluster: Cluster) -> None:
    first = await cluster.token("gw-refresh")
    client = await Client.connect(cluster.socket_urls[0], first["access_token"], "gw-refresh")
    r = await post(cluster, "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]

    reuse = await post(cluster, "/api/v1/auth/refresh",
                       {"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    # The whole session is revoked: the new refresh token, and the open socket.
    again = await post(cluster, "/api/v1/auth/refresh",
                       {"refresh_token": second["refresh_token"]})
    assert again.status_code == 401
    assert await client.closed_with(timeout=5) == 4001
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await Client.connect(cluster.socket_urls[1], second["access_token"], "gw-refresh")
    assert refused.value.response.status_code == 401


async def test_logout_closes_the_sessions_sockets_with_4001_and_stops_its_tokens(
        cluster: Cluster) -> None:
    tokens = await cluster.token("gw-logout")
    other = await cluster.token("gw-logout")  # another session of the same user stays open
    sockets = [await Client.connect(u, tokens["access_token"], "gw-logout")
               for u in cluster.socket_urls]
    survivor = await Client.connect(cluster.socket_urls[0], other["access_token"], "gw-logout")
    started = time.monotonic()
    r = await post(cluster, "/api/v1/auth/logout", token=tokens["access_token"])
    assert r.status_code == 204
    # Contract deadline: 2 s. Waited for generously, not timed.
    codes = await asyncio.gather(*(s.closed_with(timeout=10) for s in sockets))
    assert codes == [4001, 4001]
    assert time.monotonic() - started < 10
    assert (await survivor.ok("ping"))["server_time"]
    await survivor.close()
    for path, body in (("/api/v1/auth/logout", None),):
        assert (await post(cluster, path, body, token=tokens["access_token"])).status_code == 401
    refresh = await post(cluster, "/api/v1/auth/refresh",
                         {"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401


@pytest.mark.parametrize("path", ["/api/v1/conversations", "/api/v1/conversations/c_1/messages",
                                  "/api/v1/messages", "/api/v1/messages/m_1"])
async def test_the_old_messaging_routes_are_gone(cluster: Cluster, path: str) -> None:
    for method in ("GET", "POST"):
        async with httpx.AsyncClient(base_url=cluster.gateway_url) as http:
            r = await http.request(method, path)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


async def test_creating_an_app_needs_the_admin_token(cluster: Cluster) -> None:
    assert (await post(cluster, "/api/v1/admin/apps", {"name": "x"})).status_code == 401
    assert (await post(cluster, "/api/v1/admin/apps", {"name": "x"},
                       token="not-the-token")).status_code == 401
    r = await post(cluster, "/api/v1/admin/apps", {"name": "acme"}, token=cluster.admin_token)
    assert r.status_code == 201
    created = r.json()
    assert set(created) == {"app_id", "app_secret", "name"} and created["name"] == "acme"
    signed_in = await cluster.token("acme-user", app_id=created["app_id"],
                                    app_secret=created["app_secret"])
    assert signed_in["user"]["external_id"] == "acme-user"
    bad = await post(cluster, "/api/v1/admin/apps", {"name": ""}, token=cluster.admin_token)
    assert bad.status_code == 422 and "name" in bad.json()["error"]["message"]


async def test_probes_metrics_and_openapi(cluster: Cluster) -> None:
    gw = cluster.gateway_url
    assert (await get(f"{gw}/healthz")).status_code == 200
    assert (await get(f"{gw}/readyz")).json() == {"status": "ready"}
    metrics = await get(f"{gw}/metrics")
    assert "chat_gateway_requests" in metrics.text
    spec = (await get(f"{gw}/openapi.json")).json()
    assert {"/api/v1/auth/sdk/token", "/api/v1/auth/refresh", "/api/v1/auth/logout",
            "/api/v1/admin/apps"} <= set(spec["paths"])
    for url in cluster.socket_urls:
        http_url = url.replace("ws://", "http://")
        assert (await get(f"{http_url}/healthz")).status_code == 200
        assert (await get(f"{http_url}/readyz")).status_code == 200
        text = (await get(f"{http_url}/metrics")).text
        for name in ("chat_socket_connections", "chat_socket_frames_in",
                     "chat_socket_send_queue_drops", "chat_socket_op_seconds"):
            assert name in text
