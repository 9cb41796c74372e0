"""Webhook endpoints of an app, its deliveries and dead letters (docs/webhooks.md).

    /api/v1/admin/apps/{app_id}/webhooks                         GET list, POST create
    /api/v1/admin/apps/{app_id}/webhooks/deliveries              GET the outbox, newest first
    /api/v1/admin/apps/{app_id}/webhooks/dead-letters            GET deliveries that gave up
    /api/v1/admin/apps/{app_id}/webhooks/dead-letters/{id}/replay  POST: back in the outbox
    /api/v1/admin/apps/{app_id}/webhooks/{endpoint_id}           GET, PATCH, DELETE
    /api/v1/admin/apps/{app_id}/webhooks/{endpoint_id}/secret/rotate  POST: a new secret

Routes only read and write the WebhookStore: deliveries are sent by the consumers' dispatcher,
never on a request's path (a replay is picked up within its poll interval).
"""


import base64
import binascii
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol, get_args

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, field_validator

from chatcluster.domain.errors import BadRequest, NotFound
from chatcluster.domain.ids import new_id, now_rfc3339, rfc3339
from chatcluster.gateway.admin.scope import require_app
from chatcluster.ports.store import Store
from chatcluster.ports.webhooks import EVENT_TYPES, Delivery, DeliveryStatus, Endpoint, WebhookStore

Authorize = Callable[[str], Any]
EventType = Literal["message.sent", "message.edited", "message.deleted", "reaction.added",
                    "reaction.removed", "conversation.updated", "member.added",
                    "member.removed", "user.banned", "user.unbanned",
                    "message.flagged"]
assert set(get_args(EventType)) == set(EVENT_TYPES)
MAX_ENDPOINTS_PER_APP = 20


class AuditRecorder(Protocol):
    """``gateway.admin.auth.Auditor``: how an admin change reaches the audit log."""

    def record(self, request: Request, actor: Any, action: str, *, target: str | None = ...,
               app_id: str | None = ..., outcome: str = ...,
               detail: dict[str, Any] | None = ...) -> Awaitable[None]: ...


def _check_url(url: str) -> str:
    if not (url.startswith(("http://", "https://")) and len(url.split("://", 1)[1]) > 0):
        raise ValueError("must be an http:// or https:// URL")
    return url


class WebhookCreate(BaseModel):
    url: str = Field(min_length=8, max_length=2048, examples=["https://example.com/hooks/chat"])
    event_types: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    enabled: bool = True
    description: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class WebhookPatch(BaseModel):
    url: str | None = Field(default=None, min_length=8, max_length=2048)
    event_types: list[EventType] | None = Field(default=None, min_length=1,
                                                max_length=len(EVENT_TYPES))
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return value if value is None else _check_url(value)


class WebhookView(BaseModel):
    id: str
    app_id: str
    url: str
    event_types: list[str]
    enabled: bool
    description: str | None
    created_at: str
    updated_at: str


class WebhookCreated(WebhookView):
    secret: str = Field(description="Signs every delivery (X-Chat-Signature); shown only on "
                                    "create and on rotation")


class WebhookList(BaseModel):
    webhooks: list[WebhookView]


class SecretRotated(BaseModel):
    id: str
    secret: str


class DeliveryView(BaseModel):
    id: str = Field(description="X-Chat-Delivery: the same on every attempt and replay")
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: str | None
    last_status: int | None = Field(description="the receiver's last HTTP status, if any")
    last_error: str | None
    created_at: str
    finished_at: str | None
    payload: dict[str, Any]


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryView]
    next_cursor: str | None


def view(e: Endpoint) -> dict[str, Any]:
    return {"id": e.id, "app_id": e.app_id, "url": e.url, "event_types": e.event_types,
            "enabled": e.enabled, "description": e.description, "created_at": e.created_at,
            "updated_at": e.updated_at}


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "endpoint_id": d.endpoint_id, "event_id": d.event_id,
            "event_type": d.event_type, "status": d.status, "attempts": d.attempts,
            "next_attempt_at": rfc3339(d.next_attempt_at) if d.status == "pending" else None,
            "last_status": d.last_status, "last_error": d.last_error,
            "created_at": d.created_at, "finished_at": d.finished_at,
            "payload": json.loads(d.body)}


def new_webhook_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def encode_cursor(d: Delivery) -> str:
    return base64.urlsafe_b64encode(f"{d.created_at}|{d.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor: not a cursor from this list") from None
    created_at, sep, delivery_id = raw.partition("|")
    if not sep or not delivery_id:
        raise BadRequest("cursor: not a cursor from this list")
    return created_at, delivery_id


def build_router(*, authorize: Authorize, store: WebhookStore, apps: Store,
                 auditor: AuditRecorder | None = None,
                 clock: Callable[[], float] = time.time) -> APIRouter:
    """``authorize(min_role)`` is a FastAPI dependency returning the caller (an
    ``AdminPrincipal``: its ``check_app`` refuses apps outside an admin's scope)."""
    router = APIRouter(prefix="/api/v1/admin/apps/{app_id}/webhooks",
                       tags=["admin: webhooks"])
    viewer = Depends(authorize("viewer"))
    admin_role = Depends(authorize("admin"))

    async def _app(app_id: str, me: Any) -> None:
        await require_app(apps, me, app_id)

    async def _endpoint(app_id: str, endpoint_id: str, me: Any) -> Endpoint:
        await _app(app_id, me)
        found = await store.get_endpoint(app_id, endpoint_id)
        if found is None:
            raise NotFound("no such webhook")
        return found

    async def _audit(request: Request, me: Any, action: str, app_id: str, target: str,
                     detail: dict[str, Any] | None = None) -> None:
        if auditor is not None:
            await auditor.record(request, me, action, target=target, app_id=app_id,
                                 detail=detail or {})

    @router.get("", response_model=WebhookList, summary="The app's webhook endpoints")
    async def list_webhooks(app_id: str, me: Annotated[Any, viewer]) -> Any:
        await _app(app_id, me)
        return {"webhooks": [view(e) for e in await store.list_endpoints(app_id)]}

    @router.post("", status_code=201, response_model=WebhookCreated,
                 summary="Add an endpoint; its signing secret is shown only here")
    async def create_webhook(app_id: str, body: WebhookCreate, request: Request,
                             me: Annotated[Any, admin_role]) -> Any:
        await _app(app_id, me)
        if len(await store.list_endpoints(app_id)) >= MAX_ENDPOINTS_PER_APP:
            raise BadRequest(f"an app has at most {MAX_ENDPOINTS_PER_APP} webhook endpoints")
        now = now_rfc3339()
        endpoint = Endpoint(id=new_id("wh"), app_id=app_id, url=body.url,
                            secret=new_webhook_secret(),
                            event_types=list(dict.fromkeys(body.event_types)),
                            enabled=body.enabled, description=body.description,
                            created_at=now, updated_at=now)
        await store.create_endpoint(endpoint)
        await _audit(request, me, "webhook.create", app_id, endpoint.id,
                     {"url": endpoint.url, "event_types": endpoint.event_types})
        return {**view(endpoint), "secret": endpoint.secret}

    def _delivery_page(found: list[Delivery], limit: int) -> dict[str, Any]:
        more = len(found) > limit
        page = found[:limit]
        return {"deliveries": [delivery_view(d) for d in page],
                "next_cursor": encode_cursor(page[-1]) if more and page else None}

    @router.get("/deliveries", response_model=DeliveryPage,
                summary="Deliveries of the app's events, newest first")
    async def list_deliveries(
            app_id: str, me: Annotated[Any, viewer],
            status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
            limit: Annotated[int, Query(ge=1, le=200)] = 50,
            cursor: Annotated[str | None, Query(max_length=400)] = None) -> Any:
        await _app(app_id, me)
        before = decode_cursor(cursor) if cursor else None
        chosen: DeliveryStatus | None = status
        return _delivery_page(await store.list_deliveries(app_id, chosen, limit + 1, before),
                              limit)

    @router.get("/deliveries/{delivery_id}", response_model=DeliveryView,
                summary="One delivery")
    async def get_delivery(app_id: str, delivery_id: str, me: Annotated[Any, viewer]) -> Any:
        await _app(app_id, me)
        found = await store.get_delivery(app_id, delivery_id)
        if found is None:
            raise NotFound("no such delivery")
        return delivery_view(found)

    @router.get("/dead-letters", response_model=DeliveryPage,
                summary="Deliveries that gave up after their last attempt, newest first")
    async def list_dead_letters(
            app_id: str, me: Annotated[Any, viewer],
            limit: Annotated[int, Query(ge=1, le=200)] = 50,
            cursor: Annotated[str | None, Query(max_length=400)] = None) -> Any:
        await _app(app_id, me)
        before = decode_cursor(cursor) if cursor else None
        return _delivery_page(await store.list_deliveries(app_id, "dead", limit + 1, before),
                              limit)

    @router.post("/dead-letters/{delivery_id}/replay", status_code=202,
                 response_model=DeliveryView,
                 summary="Send a dead letter again: same delivery id, attempts from zero")
    async def replay(app_id: str, delivery_id: str, request: Request,
                     me: Annotated[Any, admin_role]) -> Any:
        await _app(app_id, me)
        replayed = await store.replay(app_id, delivery_id, clock())
        if replayed is None:
            raise NotFound("no such dead letter")
        await _audit(request, me, "webhook.replay", app_id, delivery_id,
                     {"endpoint_id": replayed.endpoint_id})
        return delivery_view(replayed)

    @router.get("/{endpoint_id}", response_model=WebhookView, summary="One endpoint")
    async def get_webhook(app_id: str, endpoint_id: str, me: Annotated[Any, viewer]) -> Any:
        return view(await _endpoint(app_id, endpoint_id, me))

    @router.patch("/{endpoint_id}", response_model=WebhookView,
                  summary="Change an endpoint's URL, event types, description or enabled")
    async def patch_webhook(app_id: str, endpoint_id: str, body: WebhookPatch,
                            request: Request, me: Annotated[Any, admin_role]) -> Any:
        found = await _endpoint(app_id, endpoint_id, me)
        changes = body.model_dump(exclude_unset=True)
        if changes.get("url") is None:
            changes.pop("url", None)
        if changes.get("event_types") is None:
            changes.pop("event_types", None)
        if changes.get("enabled") is None:
            changes.pop("enabled", None)
        for name, value in changes.items():
            setattr(found, name, list(dict.fromkeys(value)) if name == "event_types" else value)
        found.updated_at = now_rfc3339()
        if not await store.update_endpoint(found):
            raise NotFound("no such webhook")
        await _audit(request, me, "webhook.update", app_id, endpoint_id, changes)
        return view(found)

    @router.delete("/{endpoint_id}", status_code=204,
                   summary="Remove an endpoint; its pending deliveries are dead-lettered")
    async def delete_webhook(app_id: str, endpoint_id: str, request: Request,
                             me: Annotated[Any, admin_role]) -> Response:
        await _endpoint(app_id, endpoint_id, me)
        if not await store.delete_endpoint(app_id, endpoint_id):
            raise NotFound("no such webhook")
        await _audit(request, me, "webhook.delete", app_id, endpoint_id)
        return Response(status_code=204)

    @router.post("/{endpoint_id}/secret/rotate", response_model=SecretRotated,
                 summary="A new signing secret, used from the next attempt on")
    async def rotate_secret(app_id: str, endpoint_id: str, request: Request,
                            me: Annotated[Any, admin_role]) -> Any:
        found = await _endpoint(app_id, endpoint_id, me)
        found.secret = new_webhook_secret()
        found.updated_at = now_rfc3339()
        if not await store.update_endpoint(found):
            raise NotFound("no such webhook")
        await _audit(request, me, "webhook.secret.rotate", app_id, endpoint_id)
        return {"id": found.id, "secret": found.secret}

    return router
