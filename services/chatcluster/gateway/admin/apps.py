"""Apps (tenants): create, list, get, rename, rotate the secret with a grace period, disable and
enable, delete, and per-app settings.

Disabling or deleting an app stops its credentials at once (the token and refresh routes answer
401, the socket handshake refuses its tokens) and closes its open sockets with 4003 ("user
banned or app disabled", PROTOCOL.md §2): a ``revoke`` envelope names the app on the fan-out,
and every replica also re-checks the apps of its connections each second.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, field_validator

from chatcluster.auth.tokens import new_secret, secret_digest
from chatcluster.domain.errors import Forbidden, NotFound
from chatcluster.domain.ids import new_id, now_rfc3339
from chatcluster.domain.model import App
from chatcluster.ports.admin import AdminStore, AppSettings, SecretGrace
from chatcluster.ports.fanout import Envelope, Fanout
from chatcluster.ports.store import Store

from .auth import ADMIN_ERRORS, AdminAuth, AdminPrincipal

log = logging.getLogger(__name__)

MAX_GRACE_S = 7 * 24 * 3600  # a week: time enough to roll a new secret out to every backend
MAX_ORIGINS = 50


class AppCreateRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class AppCreated(BaseModel):
    app_id: str
    app_secret: str = Field(description="shown only here; only its SHA-256 digest is kept")
    name: str


class AppView(BaseModel):
    app_id: str
    name: str
    created_at: str
    disabled: bool
    previous_secret_valid_until: float | None = Field(
        default=None, description="unix time until which the previous secret still works")


class AppPage(BaseModel):
    apps: list[AppView]
    next_cursor: str | None


class AppRename(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class SecretRotateRequest(BaseModel):
    grace_seconds: int = Field(default=3600, ge=0, le=MAX_GRACE_S,
                               description="how long the old secret keeps working (0: not)")


class SecretRotated(BaseModel):
    app_id: str
    app_secret: str = Field(description="the new secret, shown only here")
    previous_secret_valid_until: float | None


class AppSettingsBody(BaseModel):
    token_requests_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="SDK token route, per app (null: default)")
    token_requests_per_minute_per_user: int | None = Field(
        default=None, ge=1, le=100_000,
        description="SDK token route, per user of the app (null: default)")
    messages_per_minute: int | None = Field(
        default=None, ge=1, le=100_000_000, description="message.send, per app (null: default)")
    messages_per_minute_per_user: int | None = Field(
        default=None, ge=1, le=100_000, description="message.send per user (null: default)")
    message_retention_days: int | None = Field(
        default=None, ge=1, le=36_500, description="older messages are removed (null: kept)")
    allowed_origins: list[str] = Field(
        default=[], max_length=MAX_ORIGINS,
        description="browser origins allowed to connect, e.g. https://chat.example.com; "
                    "'*' for any; empty: no restriction configured")

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if (parts.scheme not in ("http", "https") or not parts.hostname
                    or parts.path not in ("", "/") or parts.query or parts.fragment
                    or parts.username or len(origin) > 300):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
        return sorted({o.rstrip("/") for o in origins})


class AppSettingsView(AppSettingsBody):
    app_id: str
    updated_at: str | None


def _view(app: App, grace: SecretGrace | None, now: float) -> dict[str, Any]:
    return {"app_id": app.id, "name": app.name, "created_at": app.created_at,
            "disabled": app.disabled,
            "previous_secret_valid_until": grace.until if grace and grace.until > now else None}


async def secret_in_grace(admin_store: AdminStore, app_id: str, secret: str,
                          now: float) -> bool:
    """True if ``secret`` is the app's previous secret and its grace period is running."""
    grace = await admin_store.get_secret_grace(app_id)
    return (grace is not None and grace.until > now
            and hmac.compare_digest(secret_digest(secret), grace.digest))


def build_router(*, auth: AdminAuth, store: Store, admin_store: AdminStore,
                 fanout: Fanout, on_app_changed: Callable[[str], None] = lambda _: None
                 ) -> APIRouter:
    """``on_app_changed(app_id)`` runs after every change to an app's name, secret, state or
    existence: the gateway's sign-in cache drops its copy (gateway/signin.py)."""
    router = APIRouter(prefix="/api/v1/admin/apps", tags=["admin: apps"],
                       responses=ADMIN_ERRORS)
    audit = auth.auditor
    viewer = Depends(auth.require_role("viewer"))
    admin_role = Depends(auth.require_role("admin"))
    owner = Depends(auth.require_role("owner"))

    async def _app(app_id: str, me: AdminPrincipal) -> App:
        me.check_app(app_id)
        found = await store.get_app(app_id)
        if found is None:
            raise NotFound("no such app")
        return found

    async def _revoke_app(app_id: str) -> None:
        try:
            await fanout.publish(Envelope(kind="revoke", origin="gateway", app_id=app_id))
        except Exception:  # replicas also re-check their apps every second
            log.exception("app revoke fan-out failed")

    @router.post("", status_code=201, response_model=AppCreated,
                 summary="Create an app (tenant); its secret is shown only here")
    async def create_app(body: AppCreateRequest, request: Request,
                         me: AdminPrincipal = admin_role) -> Any:
        if me.app_ids:
            raise Forbidden("an admin scoped to some apps cannot create apps")
        secret = new_secret()
        created = App(id=new_id("app"), name=body.name, secret_digest=secret_digest(secret),
                      created_at=now_rfc3339())
        await store.create_app(created)
        await audit.record(request, me, "app.create", target=created.id, app_id=created.id,
                           detail={"name": created.name})
        log.info("app created", extra={"fields": {"app": created.id}})
        return {"app_id": created.id, "app_secret": secret, "name": created.name}

    @router.get("", response_model=AppPage, summary="Apps, by id, a page at a time")
    async def list_apps(me: AdminPrincipal = viewer,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50,
                        cursor: Annotated[str | None, Query(max_length=200)] = None) -> Any:
        now = auth.clock()
        page: list[App] = []
        after = cursor
        more = False
        # A scoped admin's page is filtered; keep reading until it is full or the list ends.
        while len(page) <= limit:
            batch = await store.list_apps(after, limit + 1)
            page += [a for a in batch if me.can_see(a.id)]
            if len(batch) < limit + 1:
                break
            after = batch[-1].id
        if len(page) > limit:
            page, more = page[:limit], True
        views = [_view(a, await admin_store.get_secret_grace(a.id), now) for a in page]
        return {"apps": views, "next_cursor": page[-1].id if more and page else None}

    @router.get("/{app_id}", response_model=AppView, summary="One app")
    async def get_app(app_id: str, me: AdminPrincipal = viewer) -> Any:
        found = await _app(app_id, me)
        return _view(found, await admin_store.get_secret_grace(app_id), auth.clock())

    @router.patch("/{app_id}", response_model=AppView, summary="Rename an app")
    async def rename_app(app_id: str, body: AppRename, request: Request,
                         me: AdminPrincipal = admin_role) -> Any:
        before = await _app(app_id, me)
        updated = await store.update_app(app_id, name=body.name)
        if updated is None:
            raise NotFound("no such app")
        on_app_changed(app_id)
        await audit.record(request, me, "app.rename", target=app_id, app_id=app_id,
                           detail={"from": before.name, "to": body.name})
        return _view(updated, await admin_store.get_secret_grace(app_id), auth.clock())

    @router.post("/{app_id}/secret/rotate", response_model=SecretRotated,
                 summary="New app secret; the old one keeps working for grace_seconds")
    async def rotate_secret(app_id: str, body: SecretRotateRequest, request: Request,
                            me: AdminPrincipal = admin_role) -> Any:
        before = await _app(app_id, me)
        now = auth.clock()
        grace = (SecretGrace(app_id=app_id, digest=before.secret_digest,
                             until=now + body.grace_seconds) if body.grace_seconds else None)
        # The grace digest first: no moment where the old secret is refused before its time.
        await admin_store.set_secret_grace(grace, app_id)
        secret = new_secret()
        if await store.update_app(app_id, secret_digest=secret_digest(secret)) is None:
            raise NotFound("no such app")
        on_app_changed(app_id)
        await audit.record(request, me, "app.secret.rotate", target=app_id, app_id=app_id,
                           detail={"grace_seconds": body.grace_seconds})
        return {"app_id": app_id, "app_secret": secret,
                "previous_secret_valid_until": grace.until if grace else None}

    async def _set_disabled(app_id: str, disabled: bool, request: Request,
                            me: AdminPrincipal) -> Any:
        await _app(app_id, me)
        updated = await store.update_app(app_id, disabled=disabled)
        if updated is None:
            raise NotFound("no such app")
        on_app_changed(app_id)
        if disabled:
            await _revoke_app(app_id)
        await audit.record(request, me, "app.disable" if disabled else "app.enable",
                           target=app_id, app_id=app_id)
        return _view(updated, await admin_store.get_secret_grace(app_id), auth.clock())

    @router.post("/{app_id}/disable", response_model=AppView,
                 summary="Disable an app: its tokens stop working, its sockets close (4003)")
    async def disable_app(app_id: str, request: Request,
                          me: AdminPrincipal = admin_role) -> Any:
        return await _set_disabled(app_id, True, request, me)

    @router.post("/{app_id}/enable", response_model=AppView, summary="Enable an app again")
    async def enable_app(app_id: str, request: Request,
                         me: AdminPrincipal = admin_role) -> Any:
        return await _set_disabled(app_id, False, request, me)

    @router.delete("/{app_id}", status_code=204,
                   summary="Delete an app (owner): credentials and sockets stop at once")
    async def delete_app(app_id: str, request: Request,
                         me: AdminPrincipal = owner) -> Response:
        await _app(app_id, me)
        await store.delete_app(app_id)
        on_app_changed(app_id)
        await admin_store.forget_app(app_id)
        await _revoke_app(app_id)
        await audit.record(request, me, "app.delete", target=app_id, app_id=app_id)
        return Response(status_code=204)

    @router.get("/{app_id}/settings", response_model=AppSettingsView,
                summary="Per-app settings (null: the platform default)")
    async def get_settings(app_id: str, me: AdminPrincipal = viewer) -> Any:
        await _app(app_id, me)
        found = await admin_store.get_app_settings(app_id) or AppSettings(app_id=app_id)
        return _settings_view(found)

    @router.put("/{app_id}/settings", response_model=AppSettingsView,
                summary="Replace the per-app settings")
    async def put_settings(app_id: str, body: AppSettingsBody, request: Request,
                           me: AdminPrincipal = admin_role) -> Any:
        await _app(app_id, me)
        settings = AppSettings(app_id=app_id, updated_at=now_rfc3339(), **body.model_dump())
        await admin_store.put_app_settings(settings)
        await audit.record(request, me, "app.settings.update", target=app_id, app_id=app_id,
                           detail=body.model_dump())
        return _settings_view(settings)

    return router


def _settings_view(settings: AppSettings) -> dict[str, Any]:
    return {"app_id": settings.app_id, "updated_at": settings.updated_at,
            "token_requests_per_minute": settings.token_requests_per_minute,
            "token_requests_per_minute_per_user": settings.token_requests_per_minute_per_user,
            "messages_per_minute": settings.messages_per_minute,
            "messages_per_minute_per_user": settings.messages_per_minute_per_user,
            "message_retention_days": settings.message_retention_days,
            "allowed_origins": settings.allowed_origins}
