"""The admin API in process, on the embedded adapters, with a clock the test moves: token
expiry, lockout expiry and TOTP windows without waiting (the cluster tests cover the rest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatcluster.adapters.embedded.admin import SqliteAdminStore
from chatcluster.adapters.embedded.fanout import SqliteFanout
from chatcluster.adapters.embedded.registry import SqliteRegistry
from chatcluster.adapters.embedded.store import SqliteStore
from chatcluster.auth.admin import ADMIN_TOKEN_TTL_S, LOCKOUT_S, LOCKOUT_THRESHOLD, totp_code
from chatcluster.auth.tokens import TokenIssuer
from chatcluster.gateway.app import create_gateway

ROOT = "root-token-for-tests-0123456789abcdef"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    http: httpx.AsyncClient
    clock: Clock

    async def call(self, method: str, path: str, token: str | None = None,
                   **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.request(method, f"/api/v1/admin{path}", headers=headers,
                                       **kwargs)

    async def new_admin(self, email: str, role: str = "admin",
                        password: str = "a long enough password") -> str:
        r = await self.call("POST", "/admins", ROOT,
                            json={"email": email, "password": password, "role": role})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def login(self, email: str, password: str = "a long enough password",
                    **extra: str) -> httpx.Response:
        return await self.call("POST", "/login", json={"email": email, "password": password,
                                                       **extra})


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    clock = Clock()
    store, admin_store = SqliteStore(tmp_path), SqliteAdminStore(tmp_path)
    registry, fanout = SqliteRegistry(tmp_path), SqliteFanout(tmp_path)
    app = create_gateway(store=store, registry=registry, fanout=fanout,
                         tokens=TokenIssuer("j" * 48), admin_token=ROOT,
                         admin_store=admin_store, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway") as http:
        yield Gateway(http, clock)
    for part in (fanout, registry, admin_store, store):
        await part.close()


async def test_an_admin_token_expires_after_its_ttl(gateway: Gateway) -> None:
    await gateway.new_admin("ttl@example.com")
    token = (await gateway.login("ttl@example.com")).json()["token"]
    assert (await gateway.call("GET", "/me", token)).status_code == 200
    gateway.clock.now += ADMIN_TOKEN_TTL_S - 1
    assert (await gateway.call("GET", "/apps", token)).status_code == 200
    gateway.clock.now += 2
    r = await gateway.call("GET", "/apps", token)
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "unauthorized", "message": "admin token expired"}}


async def test_a_lockout_ends_after_its_time(gateway: Gateway) -> None:
    await gateway.new_admin("lock@example.com")
    for _ in range(LOCKOUT_THRESHOLD):
        assert (await gateway.login("lock@example.com", "wrong")).status_code == 401
    r = await gateway.login("lock@example.com")  # the right password, during the lockout
    assert r.status_code == 423 and r.json()["error"]["code"] == "locked"
    assert 0 < int(r.headers["Retry-After"]) <= LOCKOUT_S + 1
    gateway.clock.now += LOCKOUT_S + 1
    assert (await gateway.login("lock@example.com")).status_code == 200


async def test_a_totp_code_works_once_and_the_next_step_works_again(gateway: Gateway) -> None:
    await gateway.new_admin("mfa@example.com")
    token = (await gateway.login("mfa@example.com")).json()["token"]
    secret = (await gateway.call("POST", "/mfa/enroll", token)).json()["secret"]
    r = await gateway.call("POST", "/mfa/verify", token,
                           json={"code": totp_code(secret, gateway.clock.now)})
    assert r.status_code == 200 and len(r.json()["recovery_codes"]) == 10
    # The enrolment used this step's code: logging in with it again is a replay.
    replay = await gateway.login("mfa@example.com",
                                 totp_code=totp_code(secret, gateway.clock.now))
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "invalid_mfa_code"
    gateway.clock.now += 30
    ok = await gateway.login("mfa@example.com", totp_code=totp_code(secret, gateway.clock.now))
    assert ok.status_code == 200
    gateway.clock.now += 90  # three steps on: a code from before is outside the window
    stale = await gateway.login("mfa@example.com",
                                totp_code=totp_code(secret, gateway.clock.now - 90))
    assert stale.status_code == 401


async def test_a_rotated_secret_grace_ends_on_time(gateway: Gateway) -> None:
    r = await gateway.call("POST", "/apps", ROOT, json={"name": "grace"})
    app_id, old = r.json()["app_id"], r.json()["app_secret"]
    r = await gateway.call("POST", f"/apps/{app_id}/secret/rotate", ROOT,
                           json={"grace_seconds": 60})
    new = r.json()["app_secret"]
    assert r.json()["previous_secret_valid_until"] == T0 + 60

    async def sign_in(secret: str) -> int:
        response = await gateway.http.post("/api/v1/auth/sdk/token", json={
            "app_id": app_id, "app_secret": secret, "user_external_id": "u"})
        return response.status_code

    assert (await sign_in(old), await sign_in(new)) == (200, 200)
    gateway.clock.now += 61
    assert (await sign_in(old), await sign_in(new)) == (401, 200)


async def test_openapi_documents_every_admin_route(gateway: Gateway) -> None:
    spec = (await gateway.http.get("/openapi.json")).json()
    paths = {p for p in spec["paths"] if p.startswith("/api/v1/admin")}
    assert {"/api/v1/admin/login", "/api/v1/admin/apps", "/api/v1/admin/apps/{app_id}",
            "/api/v1/admin/apps/{app_id}/secret/rotate", "/api/v1/admin/apps/{app_id}/settings",
            "/api/v1/admin/audit", "/api/v1/admin/admins", "/api/v1/admin/mfa/enroll",
            "/api/v1/admin/root-token/rotate"} <= paths


async def test_a_rotation_is_shared_until_the_configured_root_token_changes(
        tmp_path: Path) -> None:
    """Two gateways on one store (replicas) both honour a rotation; a gateway configured with
    a different root token (a new Secret) takes that one instead: the way back in."""
    store, admin_store = SqliteStore(tmp_path), SqliteAdminStore(tmp_path)
    registry, fanout = SqliteRegistry(tmp_path), SqliteFanout(tmp_path)

    def gateway_with(root: str) -> httpx.AsyncClient:
        app = create_gateway(store=store, registry=registry, fanout=fanout,
                             tokens=TokenIssuer("j" * 48), admin_token=root,
                             admin_store=admin_store)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway")

    async def status(http: httpx.AsyncClient, token: str) -> int:
        r = await http.get("/api/v1/admin/apps", headers={"Authorization": f"Bearer {token}"})
        return r.status_code

    replica_a, replica_b = gateway_with(ROOT), gateway_with(ROOT)
    r = await replica_a.post("/api/v1/admin/root-token/rotate",
                             headers={"Authorization": f"Bearer {ROOT}"})
    rotated = r.json()["admin_token"]
    assert [await status(g, ROOT) for g in (replica_a, replica_b)] == [401, 401]
    assert [await status(g, rotated) for g in (replica_a, replica_b)] == [200, 200]
    recovered = gateway_with("a-new-secret-from-the-operator-0123456789")
    assert await status(recovered, "a-new-secret-from-the-operator-0123456789") == 200
    assert await status(recovered, rotated) == 401
    for http in (replica_a, replica_b, recovered):
        await http.aclose()
    for part in (fanout, registry, admin_store, store):
        await part.close()
