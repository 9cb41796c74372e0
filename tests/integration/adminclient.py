"""A small client of the admin API of a running cluster, for the admin integration tests."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import httpx

from chatcluster.auth.admin import totp_code
from tests.chatclient import Cluster

PASSWORD = "correct horse battery staple"
USER_AGENT = "admin-tests/1.0"
_emails = itertools.count(1)


def unique_email(name: str) -> str:
    return f"{name}-{next(_emails)}-{time.monotonic_ns()}@example.com"


async def call(cluster: Cluster, method: str, path: str, token: str | None = None,
               **kwargs: Any) -> httpx.Response:
    """One request to ``/api/v1/admin{path}`` (or ``path`` itself if it starts with /api)."""
    headers = {"User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    url = path if path.startswith("/api/") else f"/api/v1/admin{path}"
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=20) as http:
        return await http.request(method, url, headers=headers, **kwargs)


@dataclass
class Admin:
    id: str
    email: str
    role: str
    token: str
    password: str = PASSWORD
    mfa_secret: str | None = None


async def create_admin(cluster: Cluster, role: str, *, name: str | None = None,
                       app_ids: list[str] | None = None, login: bool = True) -> Admin:
    email = unique_email(name or role)
    body: dict[str, Any] = {"email": email, "password": PASSWORD, "role": role}
    if app_ids is not None:
        body["app_ids"] = app_ids
    r = await call(cluster, "POST", "/admins", cluster.admin_token, json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["role"] == role and created["email"] == email
    token = ""
    if login:
        r = await call(cluster, "POST", "/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
    return Admin(id=created["id"], email=email, role=role, token=token)


async def login(cluster: Cluster, email: str, password: str = PASSWORD,
                **extra: str) -> httpx.Response:
    return await call(cluster, "POST", "/login",
                      json={"email": email, "password": password, **extra})


async def enable_mfa(cluster: Cluster, admin: Admin) -> list[str]:
    """Enrol and verify; returns the recovery codes. Uses the current step's code."""
    r = await call(cluster, "POST", "/mfa/enroll", admin.token)
    assert r.status_code == 200, r.text
    admin.mfa_secret = r.json()["secret"]
    assert admin.mfa_secret in r.json()["otpauth_uri"]
    r = await call(cluster, "POST", "/mfa/verify", admin.token,
                   json={"code": totp_code(admin.mfa_secret, time.time())})
    assert r.status_code == 200, r.text
    return list(r.json()["recovery_codes"])


async def audit(cluster: Cluster, **params: Any) -> list[dict[str, Any]]:
    r = await call(cluster, "GET", "/audit", cluster.admin_token, params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])
