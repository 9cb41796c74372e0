"""Admin users: login (password, then TOTP or a recovery code), lockout, MFA enrolment, the
admin list (owners only), logout, and rotation of the root token.

argon2id takes a few hundred milliseconds of CPU by design: it runs in a worker thread
(argon2-cffi releases the GIL), so a login never stalls the token route on the same loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from chatcluster.auth.admin import (
    ADMIN_TOKEN_TTL_S,
    burn_password_check,
    digest,
    hash_password,
    new_admin_token,
    new_recovery_codes,
    new_root_token,
    new_totp_secret,
    normalize_recovery_code,
    otpauth_uri,
    password_matches,
    totp_match,
)
from chatcluster.domain.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from chatcluster.domain.ids import new_id, now_rfc3339
from chatcluster.ports.admin import (
    AdminPatch,
    AdminRecord,
    AdminStore,
    AdminTokenRecord,
    RootToken,
)

from .auth import ADMIN_ERRORS, AdminAuth, AdminError, AdminPrincipal, ErrorResponse

log = logging.getLogger(__name__)

Role = Literal["viewer", "moderator", "admin", "owner"]
_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,255}$"


class LoginRequest(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=_EMAIL)
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(default=None, max_length=16,
                                  description="the 6-digit code, once MFA is enabled")
    recovery_code: str | None = Field(default=None, max_length=64,
                                      description="instead of totp_code; each works once")


class AdminView(BaseModel):
    id: str
    email: str
    role: Role
    created_at: str
    disabled: bool
    mfa_enabled: bool
    app_ids: list[str] = Field(description="apps this admin may act on; empty: every app")


class LoginResponse(BaseModel):
    token: str
    token_type: str = "Bearer"
    expires_in: int
    admin: AdminView


class AdminCreateRequest(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=_EMAIL)
    password: str = Field(min_length=12, max_length=1024,
                          description="at least 12 characters; stored as an argon2id hash")
    role: Role = "viewer"
    app_ids: list[str] = Field(default=[], max_length=100)


class AdminPatchRequest(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    app_ids: list[str] | None = Field(default=None, max_length=100)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=12, max_length=1024)


class AdminList(BaseModel):
    admins: list[AdminView]


class MfaEnrolment(BaseModel):
    secret: str = Field(description="base32 TOTP secret (RFC 6238: SHA-1, 6 digits, 30 s)")
    otpauth_uri: str = Field(description="the same, as an otpauth:// URI for a QR code")


class MfaCode(BaseModel):
    code: str = Field(min_length=6, max_length=16)


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="each works once, instead of a TOTP code; "
                                                  "shown only here")


class RootTokenRotated(BaseModel):
    admin_token: str = Field(description="the new root token, shown only here")


def view(admin: AdminRecord) -> dict[str, Any]:
    return {"id": admin.id, "email": admin.email, "role": admin.role,
            "created_at": admin.created_at, "disabled": admin.disabled,
            "mfa_enabled": admin.mfa_enabled, "app_ids": admin.app_ids}


def normalize_email(email: str) -> str:
    return email.strip().lower()


# argon2id holds 64 MiB per check: at most 4 at once per gateway (256 MiB), the rest queue.
MAX_CONCURRENT_HASHES = 4
T = TypeVar("T")


def build_router(*, auth: AdminAuth, store: AdminStore,
                 on_root_rotated: Callable[[str], None] | None = None) -> APIRouter:
    router = APIRouter(prefix="/api/v1/admin", tags=["admin: identity"],
                       responses=ADMIN_ERRORS)
    hashing = asyncio.Semaphore(MAX_CONCURRENT_HASHES)

    async def slow_hash(fn: Callable[..., T], *args: str) -> T:
        async with hashing:
            return await asyncio.to_thread(fn, *args)
    audit = auth.auditor
    viewer = Depends(auth.require_role("viewer"))
    admin_role = Depends(auth.require_role("admin"))
    owner = Depends(auth.require_role("owner"))

    async def fail_login(request: Request, key: str, email: str, admin_id: str | None,
                         reason: str) -> AdminError:
        state = await store.record_login_failure(key, auth.clock())
        await audit.record(request, admin_id or "anonymous", "admin.login", target=admin_id,
                           outcome="failed", detail={"email": email, "reason": reason,
                                                     "failures": state.failures})
        if reason == "mfa":
            return AdminError(401, "invalid_mfa_code", "wrong, expired or already used code")
        return AdminError(401, "invalid_credentials", "unknown email or wrong password")

    @router.post("/login", response_model=LoginResponse,
                 responses={423: {"model": ErrorResponse,
                                  "description": "locked: retry after Retry-After seconds"}},
                 summary="Sign an admin in: email and password, plus a TOTP or recovery code "
                         "once MFA is on. 5 failures in 15 min lock the account for 15 min (423)")
    async def login(body: LoginRequest, request: Request) -> Any:
        email = normalize_email(body.email)
        key = f"email:{email}"
        now = auth.clock()
        state = await store.get_lockout(key)
        if state.locked_until is not None and state.locked_until > now:
            wait = int(state.locked_until - now) + 1
            await audit.record(request, "anonymous", "admin.login", outcome="locked",
                               detail={"email": email})
            raise AdminError(423, "locked", f"too many failed logins; retry in {wait} s",
                             {"Retry-After": str(wait)})
        admin = await store.get_admin_by_email(email)
        if admin is None:
            await slow_hash(burn_password_check, body.password)
            raise await fail_login(request, key, email, None, "password")
        if (not await slow_hash(password_matches, body.password, admin.password_hash)
                or admin.disabled):
            raise await fail_login(request, key, email, admin.id, "password")
        if admin.mfa_enabled and admin.mfa_secret is not None:
            if body.totp_code is not None:
                step = totp_match(admin.mfa_secret, body.totp_code, now)
                if step is None or not await store.use_totp_step(admin.id, step):
                    raise await fail_login(request, key, email, admin.id, "mfa")
            elif body.recovery_code is not None:
                code = digest(normalize_recovery_code(body.recovery_code))
                if not await store.use_recovery_code(admin.id, code):
                    raise await fail_login(request, key, email, admin.id, "mfa")
                await audit.record(request, admin.id, "admin.mfa.recovery_code_used",
                                   target=admin.id)
            else:
                raise AdminError(401, "mfa_required",
                                 "this admin has MFA: send totp_code or recovery_code")
        await store.clear_lockout(key)
        token = new_admin_token()
        await store.save_token(AdminTokenRecord(
            digest=digest(token), admin_id=admin.id, created_at=now_rfc3339(),
            expires_at=now + ADMIN_TOKEN_TTL_S))
        await audit.record(request, admin.id, "admin.login", target=admin.id)
        return {"token": token, "token_type": "Bearer", "expires_in": ADMIN_TOKEN_TTL_S,
                "admin": view(admin)}

    @router.post("/logout", status_code=204, summary="Revoke the admin token used")
    async def logout(request: Request, me: AdminPrincipal = viewer) -> Response:
        if me.token_digest is None:
            raise BadRequest("the root token is not a session: rotate it instead")
        await store.revoke_token(me.token_digest)
        await audit.record(request, me, "admin.logout", target=me.admin_id)
        return Response(status_code=204)

    @router.get("/me", response_model=AdminView, summary="The signed-in admin")
    async def me_route(me: AdminPrincipal = viewer) -> Any:
        if me.is_root:
            return {"id": "root", "email": "", "role": "owner", "created_at": "",
                    "disabled": False, "mfa_enabled": False, "app_ids": []}
        return view(await _get(me.admin_id))

    async def _get(admin_id: str) -> AdminRecord:
        found = await store.get_admin(admin_id)
        if found is None:
            raise NotFound("no such admin")
        return found

    def _self(me: AdminPrincipal) -> str:
        if me.is_root:
            raise Forbidden("the root token has no MFA or password: sign in as an admin")
        return me.admin_id

    @router.post("/me/password", status_code=204,
                 summary="Change one's password; every token of the admin is revoked")
    async def change_password(body: PasswordChange, request: Request,
                              me: AdminPrincipal = viewer) -> Response:
        current = await _get(_self(me))
        if not await slow_hash(password_matches, body.current_password,
                                       current.password_hash):
            raise Unauthorized("wrong current password")
        await store.update_admin(current.id, AdminPatch(
            password_hash=await slow_hash(hash_password, body.new_password)))
        await store.revoke_admin_tokens(current.id)
        await audit.record(request, me, "admin.password.change", target=current.id)
        return Response(status_code=204)

    @router.post("/mfa/enroll", response_model=MfaEnrolment,
                 summary="Start TOTP enrolment: a new secret, enabled by /mfa/verify")
    async def mfa_enroll(request: Request, me: AdminPrincipal = viewer) -> Any:
        current = await _get(_self(me))
        if current.mfa_enabled:
            raise Conflict("MFA is already enabled (an owner can reset it)")
        secret = new_totp_secret()
        await store.update_admin(current.id, AdminPatch(mfa_secret=secret))
        await audit.record(request, me, "admin.mfa.enroll", target=current.id)
        return {"secret": secret, "otpauth_uri": otpauth_uri(secret, current.email)}

    @router.post("/mfa/verify", response_model=RecoveryCodes,
                 summary="Confirm enrolment with a current code: MFA on, recovery codes out")
    async def mfa_verify(body: MfaCode, request: Request,
                         me: AdminPrincipal = viewer) -> Any:
        current = await _get(_self(me))
        if current.mfa_enabled:
            raise Conflict("MFA is already enabled")
        if current.mfa_secret is None:
            raise Conflict("start with /mfa/enroll")
        step = totp_match(current.mfa_secret, body.code, auth.clock())
        if step is None or not await store.use_totp_step(current.id, step):
            await audit.record(request, me, "admin.mfa.verify", target=current.id,
                               outcome="failed")
            raise AdminError(400, "invalid_mfa_code", "wrong, expired or already used code")
        codes = new_recovery_codes()
        await store.update_admin(current.id, AdminPatch(
            mfa_enabled=True, recovery_digests=[digest(c) for c in codes]))
        await audit.record(request, me, "admin.mfa.enable", target=current.id)
        return {"recovery_codes": codes}

    # -- the admin list (owners) ---------------------------------------------------------------
    @router.post("/admins", status_code=201, response_model=AdminView,
                 summary="Create an admin (owner; the root token creates the first one)")
    async def create_admin(body: AdminCreateRequest, request: Request,
                           me: AdminPrincipal = owner) -> Any:
        created = AdminRecord(id=new_id("adm"), email=normalize_email(body.email),
                              password_hash=await slow_hash(hash_password, body.password),
                              role=body.role,
                              created_at=now_rfc3339(), app_ids=sorted(set(body.app_ids)))
        await store.create_admin(created)
        await audit.record(request, me, "admin.create", target=created.id,
                           detail={"email": created.email, "role": created.role})
        return view(created)

    @router.get("/admins", response_model=AdminList, summary="Every admin (admin role)")
    async def list_admins(_: AdminPrincipal = admin_role) -> Any:
        return {"admins": [view(a) for a in await store.list_admins()]}

    @router.get("/admins/{admin_id}", response_model=AdminView, summary="One admin")
    async def get_admin(admin_id: str, _: AdminPrincipal = admin_role) -> Any:
        return view(await _get(admin_id))

    async def _keep_an_owner(target: AdminRecord) -> None:
        """Refuse to remove the last enabled owner (the root token would be the only way in)."""
        owners = [a for a in await store.list_admins()
                  if a.role == "owner" and not a.disabled and a.id != target.id]
        if target.role == "owner" and not target.disabled and not owners:
            raise Conflict("this is the last enabled owner")

    @router.patch("/admins/{admin_id}", response_model=AdminView,
                  summary="Change an admin's role, scope or disable it (owner)")
    async def patch_admin(admin_id: str, body: AdminPatchRequest, request: Request,
                          me: AdminPrincipal = owner) -> Any:
        target = await _get(admin_id)
        if (body.role not in (None, "owner") or body.disabled) and target.role == "owner":
            await _keep_an_owner(target)
        updated = await store.update_admin(admin_id, AdminPatch(
            role=body.role, disabled=body.disabled,
            app_ids=None if body.app_ids is None else sorted(set(body.app_ids))))
        if updated is None:
            raise NotFound("no such admin")
        if body.disabled:
            await store.revoke_admin_tokens(admin_id)
        await audit.record(request, me, "admin.update", target=admin_id,
                           detail=body.model_dump(exclude_none=True))
        return view(updated)

    @router.delete("/admins/{admin_id}", status_code=204, summary="Delete an admin (owner)")
    async def delete_admin(admin_id: str, request: Request,
                           me: AdminPrincipal = owner) -> Response:
        await _keep_an_owner(await _get(admin_id))
        await store.revoke_admin_tokens(admin_id)
        await store.delete_admin(admin_id)
        await audit.record(request, me, "admin.delete", target=admin_id)
        return Response(status_code=204)

    @router.post("/admins/{admin_id}/mfa/reset", response_model=AdminView,
                 summary="Turn an admin's MFA off, e.g. after a lost phone (owner)")
    async def reset_mfa(admin_id: str, request: Request,
                        me: AdminPrincipal = owner) -> Any:
        await _get(admin_id)
        updated = await store.update_admin(admin_id, AdminPatch(clear_mfa=True))
        await store.revoke_admin_tokens(admin_id)
        await audit.record(request, me, "admin.mfa.reset", target=admin_id)
        assert updated is not None
        return view(updated)

    @router.post("/root-token/rotate", response_model=RootTokenRotated,
                 summary="Replace the root token (owner): the new one is shown once, the old "
                         "one stops working on every gateway replica")
    async def rotate_root(request: Request, me: AdminPrincipal = owner) -> Any:
        token = new_root_token()
        await store.set_root_token(RootToken(base_digest=auth.configured_root_digest,
                                             current_digest=digest(token),
                                             rotated_at=now_rfc3339()))
        if on_root_rotated is not None:
            try:
                on_root_rotated(token)
            except OSError:
                log.exception("could not persist the rotated root token")
        await audit.record(request, me, "root_token.rotate")
        return {"admin_token": token}

    return router
