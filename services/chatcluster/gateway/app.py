"""Gateway routes (PROTOCOL.md §1).

Every error, including validation errors and unknown routes, has the body
``{"error": {"code", "message"}}``; an unexpected exception is a logged 500 with the same
shape, never a stack trace.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatcluster import __version__
from chatcluster.auth.tokens import TokenIssuer, new_secret, secret_digest, secret_matches
from chatcluster.domain.errors import ChatError, Unauthorized
from chatcluster.domain.ids import new_id, now_rfc3339
from chatcluster.domain.model import App, Session
from chatcluster.gateway.admin import RouterFactory, mount_admin
from chatcluster.gateway.admin.apps import secret_in_grace
from chatcluster.gateway.signin import SignInCache
from chatcluster.ports.admin import AdminStore
from chatcluster.ports.fanout import Envelope, Fanout
from chatcluster.ports.moderation import ModerationStore, SessionDevice
from chatcluster.ports.registry import Registry
from chatcluster.ports.store import Store
from chatcluster.protocol.errors import HTTP_STATUS
from chatcluster.quotas import Quotas

log = logging.getLogger(__name__)

# A replica that missed three 1 s heartbeats is not offered to clients.
REPLICA_MAX_AGE_S = 3.0
CONNECTION_GUIDE = (
    "Open a WebSocket to any of socket_urls (the first is the least loaded) with the header "
    "'Authorization: Bearer <access_token>' (browsers: append ?access_token=<access_token>). "
    "The first frame is {\"event\": \"ready\"}; then send {\"id\", \"op\", \"data\"} requests. "
    "On close code 1012 reconnect to another URL; on 4001 sign in again."
)
_DUMMY_DIGEST = secret_digest("no such app")


class TokenRequest(BaseModel):
    app_id: str = Field(min_length=1, max_length=128)
    app_secret: str = Field(min_length=1, max_length=256)
    user_external_id: str = Field(min_length=1, max_length=128)
    display_name: str | None = Field(default=None, max_length=200)


class UserRef(BaseModel):
    id: str
    external_id: str


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user: UserRef
    socket_urls: list[str]
    socket_connection_guide: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class AppCreateRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class AppCreated(BaseModel):
    app_id: str
    app_secret: str
    name: str


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def user_ref_id(app_id: str, external_id: str) -> str:
    """A stable opaque id for (app, external id); the socket protocol uses the external id."""
    digest = hashlib.sha256(f"{app_id}\0{external_id}".encode()).hexdigest()
    return f"u_{digest[:24]}"


async def live_socket_urls(registry: Registry,
                           configured: Callable[[], list[str] | None] | None = None
                           ) -> list[str]:
    """Healthy replicas, least loaded first.

    On Kubernetes ``configured`` gives the operator's list of ready replicas (PROTOCOL.md §4):
    that list is the set, the registry only orders it (least connections first, draining
    last; URLs the registry does not know yet keep their given order, after the known ones).
    Until that list was read once, the registry alone answers."""
    replicas = await registry.live_replicas(REPLICA_MAX_AGE_S)
    given = configured() if configured is not None else None
    if given is None:
        live = sorted((r for r in replicas if not r.draining),
                      key=lambda r: (r.connections, r.url))
        return [r.url for r in live]
    load = {r.url: (1 if r.draining else 0, r.connections) for r in replicas}
    order = {url: i for i, url in enumerate(given)}
    return sorted(given, key=lambda u: (u not in load, load.get(u, (0, 0)), order[u]))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


class Observe:
    """Counts and times every request by route, and turns an unhandled exception into a
    logged JSON 500. Plain ASGI: Starlette's ``BaseHTTPMiddleware`` costs a task, a stream and a
    copy of the body per request, about a fifth of the token route's CPU (bench/token_route.py).
    """

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        responded = False

        async def observed_send(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"path": scope.get("path")}})
            status = 500
            if not responded:  # else the client sees the answer cut short
                await _error(500, "internal", "internal error")(scope, receive, send)
        # The router records the matched route in the scope it was given (this one).
        name = getattr(scope.get("route"), "path", "unmatched")
        self.requests.labels(name, str(status)).inc()
        self.latency.labels(name).observe(time.perf_counter() - started)


def create_gateway(*, store: Store, registry: Registry, fanout: Fanout, tokens: TokenIssuer,
                   admin_token: str, admin_store: AdminStore | None = None,
                   on_root_rotated: Callable[[str], None] | None = None,
                   admin_routers: Sequence[RouterFactory] = (),
                   clock: Callable[[], float] = time.time,
                   socket_urls: Callable[[], list[str] | None] | None = None,
                   on_token_issued: Callable[[str, str], None] | None = None,
                   moderation: ModerationStore | None = None,
                   quotas: Quotas | None = None,
                   signin: SignInCache | None = None) -> FastAPI:
    """The gateway. With an ``admin_store`` it serves the whole admin API (docs/admin.md) and
    includes ``admin_routers``; without one, only the root token's ``POST /api/v1/admin/apps``.
    ``signin`` is the sign-in cache the admin routers given here also invalidate (a fresh one
    over ``store`` and ``moderation`` if None).
    """
    if signin is None:
        signin = SignInCache(store, moderation,
                             lambda: live_socket_urls(registry, socket_urls))
    cache = signin
    app = FastAPI(title="chatcluster gateway", version=__version__,
                  description="Credentials in, tokens and live socket URLs out. Messaging is "
                              "on the socket replicas (see docs/protocol.md).",
                  responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    metrics = CollectorRegistry()
    requests = Counter("chat_gateway_requests", "HTTP requests", ["route", "status"],
                       registry=metrics)
    latency = Histogram("chat_gateway_request_seconds", "HTTP request latency", ["route"],
                        registry=metrics)
    tokens_issued = Counter("chat_gateway_tokens_issued", "Token pairs issued", ["kind"],
                            registry=metrics)

    app.add_middleware(Observe, requests=requests, latency=latency)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "bad_request", f"{where}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "bad_request"}.get(exc.status_code, "bad_request")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(ChatError)
    async def chat_error(_: Request, exc: ChatError) -> JSONResponse:
        return _error(HTTP_STATUS.get(exc.code, 500), exc.code, exc.message)

    async def issue_pair(app_id: str, user_id: str, session_id: str,
                         refresh_jti: str) -> dict[str, Any]:
        access, _ = tokens.issue("access", app_id, user_id, session_id)
        refresh, _ = tokens.issue("refresh", app_id, user_id, session_id, jti=refresh_jti)
        return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": tokens.access_ttl,
                "user": {"id": user_ref_id(app_id, user_id), "external_id": user_id},
                "socket_urls": await cache.socket_urls(),
                "socket_connection_guide": CONNECTION_GUIDE}

    @app.post("/api/v1/auth/sdk/token", response_model=TokenResponse, tags=["auth"],
              summary="Sign a user in (server to server: the app secret never ships in a client)")
    async def sdk_token(body: TokenRequest, request: Request) -> Any:
        found = await cache.app(body.app_id)
        if found is None or not secret_matches(body.app_secret, found.secret_digest):
            # Not the cached secret: ask the store (a secret rotated on another gateway).
            found = await cache.app(body.app_id, fresh=True)
            digest = found.secret_digest if found is not None else _DUMMY_DIGEST
            # Compare even for an unknown app, so the two failures take the same time.
            matches = secret_matches(body.app_secret, digest)
            if not matches and admin_store is not None:  # the previous secret, while in grace
                matches = await secret_in_grace(admin_store, body.app_id, body.app_secret,
                                                clock())
            if not matches:
                found = None
        if found is None or found.disabled:
            return _error(401, "invalid_credentials", "unknown app or wrong secret")
        now = now_rfc3339()
        if await cache.banned(found.id, body.user_external_id, now):
            return _error(403, "user_banned", "this user is banned from the app")
        if quotas is not None:
            wait = await quotas.token(found.id, body.user_external_id)
            if wait > 0:
                return _error(429, "rate_limited", "too many token requests for this app or "
                              "user; retry after the Retry-After seconds",
                              headers={"Retry-After": str(math.ceil(wait))})
        session_id, jti = new_id("s"), secrets.token_urlsafe(16)
        await store.sign_in(Session(id=session_id, app_id=found.id,
                                    user_id=body.user_external_id, refresh_jti=jti,
                                    created_at=now), body.display_name)
        tokens_issued.labels("sdk").inc()
        _seen(request, found.id, body.user_external_id, session_id, None)
        if on_token_issued is not None:  # usage per app and day (never blocks the route)
            on_token_issued(found.id, session_id)
        return await issue_pair(found.id, body.user_external_id, session_id, jti)

    @app.post("/api/v1/auth/refresh", response_model=TokenResponse, tags=["auth"],
              summary="Rotate a refresh token; a reused one revokes its whole session")
    async def refresh(body: RefreshRequest, request: Request) -> Any:
        claims = tokens.verify(body.refresh_token, "refresh")
        session = await store.get_session(claims.session_id)
        if session is None or session.revoked_at is not None:
            raise Unauthorized("session revoked")
        owner = await cache.app(session.app_id)
        if owner is None or owner.disabled:
            raise Unauthorized("app disabled")
        if await cache.banned(session.app_id, session.user_id, now_rfc3339()):
            return _error(403, "user_banned", "this user is banned from the app")
        new_jti = secrets.token_urlsafe(16)
        if not await store.rotate_refresh(session.id, claims.jti, new_jti):
            # A refresh token used twice: someone else holds a copy. Revoke the session.
            await revoke(session.id)
            log.warning("refresh token reuse; session revoked",
                        extra={"fields": {"session": session.id, "app": session.app_id}})
            raise Unauthorized("refresh token reused; session revoked")
        tokens_issued.labels("refresh").inc()
        _seen(request, session.app_id, session.user_id, session.id, now_rfc3339())
        if on_token_issued is not None:
            on_token_issued(session.app_id, new_jti)
        return await issue_pair(session.app_id, session.user_id, session.id, new_jti)

    recording: set[asyncio.Task[None]] = set()

    def _seen(request: Request, app_id: str, user_id: str, session_id: str,
              refreshed_at: str | None) -> None:
        """Record the device of a session for the admin's session list, off the route's path
        (best effort: it never delays nor fails a sign-in)."""
        if moderation is None:
            return
        device = SessionDevice(
            session_id=session_id, app_id=app_id, user_id=user_id,
            user_agent=(request.headers.get("user-agent") or "")[:300] or None,
            ip=request.client.host if request.client else None, last_refresh_at=refreshed_at)
        task = asyncio.get_running_loop().create_task(_record(device))
        recording.add(task)
        task.add_done_callback(recording.discard)

    async def _record(device: SessionDevice) -> None:
        assert moderation is not None
        try:
            await moderation.record_device(device)
        except Exception:
            log.exception("recording a session's device failed")

    async def revoke(session_id: str) -> None:
        await store.revoke_session(session_id, now_rfc3339())
        try:
            await fanout.publish(Envelope(kind="revoke", origin="gateway",
                                          session_id=session_id))
        except Exception:  # replicas also poll revocations every second
            log.exception("revoke fan-out failed")

    @app.post("/api/v1/auth/logout", status_code=204, tags=["auth"],
              summary="End the session: its tokens stop working, its sockets close with 4001")
    async def logout(authorization: Annotated[str | None, Header()] = None) -> Response:
        claims = tokens.verify(_bearer(authorization), "access")
        session = await store.get_session(claims.session_id)
        if session is None or session.revoked_at is not None:
            raise Unauthorized("session revoked")
        await revoke(session.id)
        return Response(status_code=204)

    if admin_store is not None:
        mount_admin(app, store=store, admin_store=admin_store, fanout=fanout,
                    root_token=admin_token, on_root_rotated=on_root_rotated,
                    extra_routers=admin_routers, clock=clock,
                    on_app_changed=cache.forget_app)
    else:
        @app.post("/api/v1/admin/apps", status_code=201, response_model=AppCreated,
                  tags=["admin"], summary="Create an app (tenant); its secret is shown only here")
        async def create_app(body: AppCreateRequest,
                             authorization: Annotated[str | None, Header()] = None) -> Any:
            token = _bearer(authorization)
            if not hmac.compare_digest(token.encode(), admin_token.encode()):
                raise Unauthorized("admin token required")
            secret = new_secret()
            created = App(id=new_id("app"), name=body.name,
                          secret_digest=secret_digest(secret), created_at=now_rfc3339())
            await store.create_app(created)
            log.info("app created", extra={"fields": {"app": created.id}})
            return {"app_id": created.id, "app_secret": secret, "name": created.name}

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: the backends answer")
    async def readyz() -> Any:
        try:
            await store.ping()
            await registry.live_replicas(REPLICA_MAX_AGE_S)
            if admin_store is not None:
                await admin_store.ping()
        except Exception as exc:
            return _error(503, "unavailable", f"backend unreachable: {exc}")
        return {"status": "ready"}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type="text/plain; version=0.0.4")

    return app


def _bearer(value: str | None) -> str:
    scheme, _, token = (value or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    return token.strip()
