"""Apps (tenants) on a running cluster: the contract's create, list pages, rename, secret
rotation with a grace period, disable (tokens refused, sockets closed with 4003 on every
replica), enable, delete, and validated settings."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets

from tests.chatclient import Client, Cluster
from tests.integration.adminclient import audit, call


async def sign_in(cluster: Cluster, app_id: str, secret: str,
                  user: str = "alice") -> httpx.Response:
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        return await http.post("/api/v1/auth/sdk/token", json={
            "app_id": app_id, "app_secret": secret, "user_external_id": user})


async def refresh(cluster: Cluster, refresh_token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        return await http.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


async def test_create_keeps_the_contract_and_get_and_list_show_the_app(cluster: Cluster
                                                                       ) -> None:
    r = await call(cluster, "POST", "/apps", cluster.admin_token, json={"name": "shop"})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"app_id", "app_secret", "name"} and body["name"] == "shop"
    r = await call(cluster, "GET", f"/apps/{body['app_id']}", cluster.admin_token)
    assert r.status_code == 200
    assert r.json()["name"] == "shop" and r.json()["disabled"] is False
    assert "app_secret" not in r.json() and body["app_secret"] not in r.text

    created = {body["app_id"]} | {(await cluster.new_app(f"page{i}"))[0] for i in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await call(cluster, "GET", "/apps", cluster.admin_token, params=params)
        assert r.status_code == 200 and len(r.json()["apps"]) <= 2
        seen += [a["app_id"] for a in r.json()["apps"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert created <= set(seen) and cluster.app_id in seen
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    entry = (await audit(cluster, action="app.create", app_id=body["app_id"]))[0]
    assert entry["actor"] == "root" and entry["detail"] == {"name": "shop"}


async def test_rename(cluster: Cluster) -> None:
    app_id, secret = await cluster.new_app("before")
    r = await call(cluster, "PATCH", f"/apps/{app_id}", cluster.admin_token,
                   json={"name": "after"})
    assert r.status_code == 200 and r.json()["name"] == "after"
    assert (await call(cluster, "GET", f"/apps/{app_id}", cluster.admin_token)
            ).json()["name"] == "after"
    assert (await sign_in(cluster, app_id, secret)).status_code == 200
    r = await call(cluster, "PATCH", f"/apps/{app_id}", cluster.admin_token, json={"name": ""})
    assert r.status_code == 422 and "name" in r.json()["error"]["message"]
    entry = (await audit(cluster, action="app.rename", app_id=app_id))[0]
    assert entry["detail"] == {"from": "before", "to": "after"}


async def test_secret_rotation_keeps_the_old_secret_for_the_grace_period(cluster: Cluster
                                                                         ) -> None:
    app_id, old = await cluster.new_app("rotating")
    r = await call(cluster, "POST", f"/apps/{app_id}/secret/rotate", cluster.admin_token,
                   json={"grace_seconds": 3600})
    assert r.status_code == 200
    new = r.json()["app_secret"]
    assert new != old and r.json()["previous_secret_valid_until"] is not None
    assert (await sign_in(cluster, app_id, old)).status_code == 200
    assert (await sign_in(cluster, app_id, new)).status_code == 200
    shown = (await call(cluster, "GET", f"/apps/{app_id}", cluster.admin_token)).json()
    assert shown["previous_secret_valid_until"] == r.json()["previous_secret_valid_until"]

    # Rotating again without grace: only the newest secret works, neither older one.
    r = await call(cluster, "POST", f"/apps/{app_id}/secret/rotate", cluster.admin_token,
                   json={"grace_seconds": 0})
    newest = r.json()["app_secret"]
    assert r.json()["previous_secret_valid_until"] is None
    statuses = [(await sign_in(cluster, app_id, s)).status_code for s in (old, new, newest)]
    assert statuses == [401, 401, 200]
    wrong = await sign_in(cluster, app_id, old)
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    for bad in (-1, 7 * 24 * 3600 + 1, "soon"):
        r = await call(cluster, "POST", f"/apps/{app_id}/secret/rotate", cluster.admin_token,
                       json={"grace_seconds": bad})
        assert r.status_code == 422 and "grace_seconds" in r.json()["error"]["message"]
    assert (await sign_in(cluster, app_id, newest)).status_code == 200, "refusals change nothing"


async def test_disable_refuses_tokens_and_closes_sockets_then_enable(cluster: Cluster) -> None:
    app_id, secret = await cluster.new_app("to-disable")
    other_id, other_secret = await cluster.new_app("bystander")
    tokens = (await sign_in(cluster, app_id, secret, "dis-alice")).json()
    sockets = [await Client.connect(url, tokens["access_token"], "dis-alice")
               for url in cluster.socket_urls]
    bystander_tokens = (await sign_in(cluster, other_id, other_secret, "dis-bob")).json()
    bystander = await Client.connect(cluster.socket_urls[1], bystander_tokens["access_token"],
                                     "dis-bob")
    r = await call(cluster, "POST", f"/apps/{app_id}/disable", cluster.admin_token)
    assert r.status_code == 200 and r.json()["disabled"] is True
    codes = await asyncio.gather(*(s.closed_with(timeout=10) for s in sockets))
    assert codes == [4003, 4003], "every replica closes the app's sockets"
    assert (await bystander.ok("ping"))["server_time"], "other apps are untouched"
    await bystander.close()

    r = await sign_in(cluster, app_id, secret, "dis-carol")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    assert (await refresh(cluster, tokens["refresh_token"])).status_code == 401
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await Client.connect(cluster.socket_urls[0], tokens["access_token"], "dis-alice")
    assert refused.value.response.status_code == 401

    r = await call(cluster, "POST", f"/apps/{app_id}/enable", cluster.admin_token)
    assert r.status_code == 200 and r.json()["disabled"] is False
    again = await sign_in(cluster, app_id, secret, "dis-alice")
    assert again.status_code == 200
    client = await Client.connect(cluster.socket_urls[0], again.json()["access_token"],
                                  "dis-alice")
    assert (await client.ok("ping"))["server_time"]
    await client.close()
    actions = [e["action"] for e in await audit(cluster, app_id=app_id)]
    assert actions[:2] == ["app.enable", "app.disable"]


async def test_delete_ends_the_app(cluster: Cluster) -> None:
    app_id, secret = await cluster.new_app("to-delete")
    tokens = (await sign_in(cluster, app_id, secret, "del-alice")).json()
    client = await Client.connect(cluster.socket_urls[1], tokens["access_token"], "del-alice")
    r = await call(cluster, "DELETE", f"/apps/{app_id}", cluster.admin_token)
    assert r.status_code == 204
    assert await client.closed_with(timeout=10) == 4003
    assert (await sign_in(cluster, app_id, secret)).status_code == 401
    assert (await refresh(cluster, tokens["refresh_token"])).status_code == 401
    assert (await call(cluster, "GET", f"/apps/{app_id}", cluster.admin_token)
            ).status_code == 404
    assert (await call(cluster, "DELETE", f"/apps/{app_id}", cluster.admin_token)
            ).status_code == 404
    assert (await audit(cluster, action="app.delete", app_id=app_id))[0]["actor"] == "root"


async def test_settings_are_validated_and_kept(cluster: Cluster) -> None:
    app_id, _ = await cluster.new_app("configured")
    r = await call(cluster, "GET", f"/apps/{app_id}/settings", cluster.admin_token)
    assert r.status_code == 200
    assert r.json()["message_retention_days"] is None and r.json()["allowed_origins"] == []
    settings = {"token_requests_per_minute": 600, "messages_per_minute_per_user": 120,
                "message_retention_days": 90,
                "allowed_origins": ["https://chat.example.com", "http://localhost:3000/"]}
    r = await call(cluster, "PUT", f"/apps/{app_id}/settings", cluster.admin_token,
                   json=settings)
    assert r.status_code == 200, r.text
    got = (await call(cluster, "GET", f"/apps/{app_id}/settings", cluster.admin_token)).json()
    assert got["message_retention_days"] == 90 and got["token_requests_per_minute"] == 600
    assert got["allowed_origins"] == ["http://localhost:3000", "https://chat.example.com"]
    assert got["updated_at"] is not None
    for bad, field in (({"message_retention_days": 0}, "message_retention_days"),
                       ({"token_requests_per_minute": -5}, "token_requests_per_minute"),
                       ({"allowed_origins": ["ftp://x.example"]}, "allowed_origins"),
                       ({"allowed_origins": ["https://x.example/path"]}, "allowed_origins"),
                       ({"allowed_origins": ["not an origin"]}, "allowed_origins"),
                       ({"allowed_origins": "https://x.example"}, "allowed_origins")):
        r = await call(cluster, "PUT", f"/apps/{app_id}/settings", cluster.admin_token,
                       json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "bad_request"
        assert field in r.json()["error"]["message"]
    again = (await call(cluster, "GET", f"/apps/{app_id}/settings", cluster.admin_token)).json()
    assert again == got, "a refused update changes nothing"


async def test_bad_input_is_never_a_500(cluster: Cluster) -> None:
    token = cluster.admin_token
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/apps", "not json"), ("POST", "/apps", {"name": "x" * 201}),
        ("POST", "/apps", {"name": 5}), ("GET", "/apps?limit=0", None),
        ("GET", "/apps?limit=abc", None), ("GET", "/audit?cursor=%%%", None),
        ("GET", "/audit?cursor=Zm9v", None), ("GET", "/audit?since=yesterday", None),
        ("PUT", f"/apps/{cluster.app_id}/settings", [1, 2]),
        ("POST", "/admins", {"email": "a@b.c", "password": "short", "role": "viewer"}),
        ("POST", "/admins", {"email": "a@b.c", "password": "long enough pass", "role": "god"}),
        ("PATCH", "/admins/x", {"role": "god"}),
    ]
    for method, path, body in cases:
        kwargs: dict[str, Any] = ({"content": body, "headers": {"content-type":
                                                                "application/json"}}
                                  if isinstance(body, str) else {"json": body})
        r = await call(cluster, method, path, token, **kwargs)
        assert r.status_code in (400, 404, 422), (method, path, body, r.text)
        assert set(r.json()["error"]) == {"code", "message"}
