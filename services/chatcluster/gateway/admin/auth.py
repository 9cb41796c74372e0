"""Who is calling an admin route, and may they: ``AdminAuth.require_role(min_role)``.

A Bearer token on an admin route is either the root token (configured, or its rotation held in
the AdminStore so every gateway replica sees it) — an owner — or an admin token from
``POST /api/v1/admin/login``, looked up by digest with its admin's *current* role, so a
demotion, a disable or a logout takes effect on the next request.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from chatcluster.auth.admin import ADMIN_TOKEN_PREFIX, ROLE_RANK, digest, role_allows
from chatcluster.domain.errors import Forbidden, NotFound, Unauthorized
from chatcluster.domain.ids import new_id, now_rfc3339
from chatcluster.ports.admin import AdminStore, AuditEntry

log = logging.getLogger(__name__)

ROOT_ACTOR = "root"
Clock = Callable[[], float]


class AdminError(Exception):
    """An admin-route failure with its own HTTP status and headers (423 Locked with
    Retry-After, 401 mfa_required), outside the protocol's error table (``ChatError``)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.headers = headers or {}


async def admin_error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AdminError)
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}},
                        status_code=exc.status, headers=exc.headers)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


# What every admin route may answer besides its success (documented in the OpenAPI).
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in (
        (401, "no, a forged, expired or revoked token"), (403, "the role is too low"),
        (404, "no such object, or outside the admin's apps"), (409, "conflict"))}


@dataclass(frozen=True)
class AdminPrincipal:
    admin_id: str  # "root" for the root token
    role: str
    is_root: bool
    email: str | None = None
    app_ids: tuple[str, ...] = ()  # empty: every app
    token_digest: str | None = None

    def can_see(self, app_id: str) -> bool:
        return not self.app_ids or app_id in self.app_ids

    def check_app(self, app_id: str) -> None:
        """An app outside the admin's scope answers like an app that does not exist."""
        if not self.can_see(app_id):
            raise NotFound("no such app")


@dataclass(frozen=True)
class Caller:
    ip: str | None
    user_agent: str | None

    @classmethod
    def of(cls, request: Request) -> Caller:
        return cls(ip=request.client.host if request.client else None,
                   user_agent=request.headers.get("user-agent"))


class Auditor:
    """Writes who did what, to what, when and from where. A failed audit write fails the
    request (an unrecorded admin action is worse than a retried one)."""

    def __init__(self, store: AdminStore) -> None:
        self.store = store

    async def record(self, request: Request, actor: AdminPrincipal | str, action: str, *,
                     target: str | None = None, app_id: str | None = None,
                     outcome: str = "ok", detail: dict[str, Any] | None = None) -> None:
        caller = Caller.of(request)
        actor_id = actor if isinstance(actor, str) else actor.admin_id
        await self.store.append_audit(AuditEntry(
            id=new_id("aud"), at=now_rfc3339(), actor=actor_id, action=action, target=target,
            app_id=app_id, ip=caller.ip, user_agent=caller.user_agent, outcome=outcome,
            detail=detail or {}))


class AdminAuth:
    def __init__(self, store: AdminStore, root_token: str, auditor: Auditor,
                 clock: Clock = time.time) -> None:
        self.store = store
        self.configured_root_digest = digest(root_token)
        self.auditor = auditor
        self.clock = clock

    async def root_digest(self) -> str:
        """The digest the root token must have now: the rotated one while the configured token
        is still the one that was rotated, else the configured one."""
        rotated = await self.store.get_root_token()
        if rotated is not None and rotated.base_digest == self.configured_root_digest:
            return rotated.current_digest
        return self.configured_root_digest

    async def principal(self, token: str) -> AdminPrincipal:
        presented = digest(token)
        record = (await self.store.get_token(presented)
                  if token.startswith(ADMIN_TOKEN_PREFIX) else None)
        if record is None:
            if hmac.compare_digest(presented, await self.root_digest()):
                return AdminPrincipal(admin_id=ROOT_ACTOR, role="owner", is_root=True)
            raise Unauthorized("invalid admin token")
        if record.revoked:
            raise Unauthorized("invalid admin token")
        if record.expires_at <= self.clock():
            raise Unauthorized("admin token expired")
        admin = await self.store.get_admin(record.admin_id)
        if admin is None or admin.disabled:
            raise Unauthorized("invalid admin token")
        return AdminPrincipal(admin_id=admin.id, role=admin.role, is_root=False,
                              email=admin.email, app_ids=tuple(admin.app_ids),
                              token_digest=presented)

    def require_role(self, min_role: str) -> Callable[..., Awaitable[AdminPrincipal]]:
        """A FastAPI dependency: the caller's principal if its role is at least ``min_role``;
        401 without a valid token, 403 (audited as denied) with too low a role."""
        if min_role not in ROLE_RANK:
            raise ValueError(f"unknown admin role {min_role!r}")

        async def dependency(request: Request,
                             authorization: Annotated[str | None, Header(
                                 description="Bearer admin token (or the root token)")] = None,
                             ) -> AdminPrincipal:
            principal = await self.principal(bearer(authorization))
            if not role_allows(principal.role, min_role):
                await self.auditor.record(request, principal, "access.denied",
                                          target=request.url.path, outcome="denied",
                                          detail={"method": request.method,
                                                  "needs": min_role})
                raise Forbidden(f"needs the {min_role} role")
            return principal

        return dependency


def bearer(value: str | None) -> str:
    scheme, _, token = (value or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    return token.strip()
