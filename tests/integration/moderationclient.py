"""Helpers shared by the users, moderation and compliance integration tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from tests.chatclient import Client, Cluster
from tests.integration.adminclient import call

ROLES = ("viewer", "moderator", "admin", "owner")
RANK = {role: i for i, role in enumerate(ROLES)}


async def sign_in(cluster: Cluster, user: str, *, display_name: str | None = None,
                  user_agent: str = "tests/1.0", app: tuple[str, str] | None = None
                  ) -> httpx.Response:
    body: dict[str, Any] = {"app_id": app[0] if app else cluster.app_id,
                            "app_secret": app[1] if app else cluster.app_secret,
                            "user_external_id": user}
    if display_name is not None:
        body["display_name"] = display_name
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        return await http.post("/api/v1/auth/sdk/token", json=body,
                               headers={"User-Agent": user_agent})


async def refresh(cluster: Cluster, refresh_token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        return await http.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token},
                               headers={"User-Agent": "refresher/2.0"})


async def open_socket(cluster: Cluster, user: str, replica: int = 0, *,
                      display_name: str | None = None,
                      app: tuple[str, str] | None = None) -> Client:
    r = await sign_in(cluster, user, display_name=display_name, app=app)
    assert r.status_code == 200, r.text
    return await Client.connect(cluster.socket_urls[replica % len(cluster.socket_urls)],
                                r.json()["access_token"], user)


async def connect_close_code(url: str, token: str) -> int | None:
    """Open a socket with ``token``; the close code if the server closes it before ``ready``
    (None if it answered ``ready``)."""
    ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})
    try:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["event"] == "ready"
        return None
    except websockets.ConnectionClosed:
        return ws.close_code
    finally:
        await ws.close()


async def admin_call(cluster: Cluster, method: str, path: str, token: str | None = None,
                     **kwargs: Any) -> httpx.Response:
    """``call`` with the root token by default."""
    return await call(cluster, method, path, cluster.admin_token if token is None else token,
                      **kwargs)


async def every_page(cluster: Cluster, path: str, key: str, **params: Any
                     ) -> list[dict[str, Any]]:
    """The ``key`` items of every page of an admin list route (root token), cursor by cursor."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await admin_call(cluster, "GET", path, params=query)
        assert r.status_code == 200, r.text
        out += r.json()[key]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return out


async def expect_refused(client: Client, op: str, data: dict[str, Any], word: str,
                         timeout: float = 3.0) -> dict[str, Any]:
    """Until ``op`` is refused with ``forbidden`` and a message starting with ``word`` (the
    state reaches every replica within the documented bound); the error."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        frame = await client.request(op, data)
        if not frame["ok"]:
            error = dict(frame["error"])
            assert error["code"] == "forbidden", error
            assert error["message"].startswith(word), error
            return error
        assert asyncio.get_running_loop().time() < deadline, f"{op} still allowed: {frame}"
        await asyncio.sleep(0.1)
