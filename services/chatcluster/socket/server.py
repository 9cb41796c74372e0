"""One socket replica: the websockets listener and its background duties.

Handshake: the access token comes from ``Authorization: Bearer`` or ``?access_token=``; a
missing, invalid or expired token, a revoked session or a disabled app is refused with HTTP 401
before the upgrade. Plain ``GET /healthz``, ``/readyz`` and ``/metrics`` are answered on the
same port. The read loop never awaits an op: it checks the limits, decodes, and starts a task,
so a slow op never delays the next frame and at most ``max_in_flight`` run per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from prometheus_client import generate_latest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from chatcluster.auth.tokens import Claims, TokenIssuer
from chatcluster.domain.errors import ChatError, RateLimited, Unauthorized
from chatcluster.domain.ids import new_id, now_rfc3339, rfc3339
from chatcluster.domain.model import Message
from chatcluster.observability import SocketMetrics
from chatcluster.ports.bus import Bus
from chatcluster.ports.fanout import Fanout
from chatcluster.ports.membership import MembershipCache
from chatcluster.ports.moderation import ModerationStore
from chatcluster.ports.registry import Registry, ReplicaInfo
from chatcluster.ports.sequencer import Sequencer
from chatcluster.ports.store import Store
from chatcluster.protocol.errors import (
    CLOSE_POLICY,
    CLOSE_RESTARTING,
    CLOSE_SESSION_REVOKED,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_USER_BANNED,
)
from chatcluster.protocol.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    HARD_MAX_FRAME_BYTES,
    FrameError,
    decode_request,
    encode_error,
    encode_event,
    encode_ok,
    peek_request_id,
)
from chatcluster.quotas import Quotas
from chatcluster.socket.connection import ClientConnection, SendTicket, TokenBucket
from chatcluster.socket.delivery import DEFAULT_MAX_QUEUED_BYTES, EventPublisher, LocalDelivery
from chatcluster.socket.moderation import ENVELOPE_KIND as MODERATION_ENVELOPE
from chatcluster.socket.moderation import ModerationGate
from chatcluster.socket.operations import CURRENT_TICKET, Operations
from chatcluster.socket.presence import Presence

log = logging.getLogger(__name__)


class _MessageData(msgspec.Struct):
    message: Message


class _MessageEvent(msgspec.Struct):
    data: _MessageData


_changed_message = msgspec.json.Decoder(_MessageEvent)
CHANGED_MESSAGE_EVENTS = ("message.updated", "message.deleted")

HEARTBEAT_S = 1.0
REVOCATION_POLL_S = 1.0  # backs up the fan-out's revoke envelope: logout closes within 2 s
# A client refused this many frames in a row for rate is ignoring retry_after_ms: close 1008.
ABUSE_STREAK = 500


class SocketSettings(msgspec.Struct, kw_only=True):
    replica_id: str
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None
    frame_burst: int = 200
    frame_rate: float = 200.0
    max_in_flight: int = 50
    # Requests being served by this replica at once, all connections together. Past this the
    # replica sheds load with rate_limited instead of queueing: at saturation (about 2,000
    # msgs/s on one core) a few hundred are in flight, so this only bites under overload.
    max_replica_in_flight: int = 2000
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    # 20 s pings: well inside the 60 s after which home routers and load balancers drop idle TCP.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    drain_timeout: float = 5.0


class SocketReplica:
    def __init__(self, settings: SocketSettings, *, store: Store, sequencer: Sequencer,
                 bus: Bus, fanout: Fanout, registry: Registry, tokens: TokenIssuer,
                 membership: MembershipCache | None = None,
                 moderation: ModerationStore | None = None,
                 quotas: Quotas | None = None) -> None:
        self.settings = settings
        self.store = store
        self.fanout = fanout
        self.registry = registry
        self.tokens = tokens
        self.metrics = SocketMetrics()
        self.delivery = LocalDelivery(self.metrics, settings.max_queued_bytes)
        self.events = EventPublisher(settings.replica_id, self.delivery, fanout)
        self.presence = Presence(settings.replica_id, store, registry, self.events)
        # Bans, mutes and freezes (docs/moderation.md); without a store, nothing is refused.
        self.moderation = (ModerationGate(moderation, self.delivery) if moderation is not None
                           else None)
        self.ops = Operations(store=store, sequencer=sequencer, bus=bus, events=self.events,
                              presence=self.presence, membership=membership,
                              moderation=self.moderation, quotas=quotas)
        self.url = settings.public_url or ""
        self.draining = False
        self.ready = asyncio.Event()
        # Claims checked in process_request, picked up by the handler. Weak: a handshake that
        # fails after authentication must not leave its entry behind.
        self._pending: weakref.WeakKeyDictionary[ServerConnection, Claims] = (
            weakref.WeakKeyDictionary())
        self._requests: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        async with serve(self._handler, s.host, s.port, process_request=self._process_request,
                         compression=None, max_size=HARD_MAX_FRAME_BYTES,
                         ping_interval=s.ping_interval, ping_timeout=s.ping_timeout,
                         # 5 s for a slow reader to drain its queue and see why it is closed.
                         close_timeout=5) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = s.public_url or f"ws://{s.host}:{port}"
            # A replica restarted after kill -9 keeps its id: forget the presence counts its
            # previous life left, or its users would look online until they reconnect.
            await self.registry.remove(s.replica_id)
            await self._heartbeat_once()
            self._background = [asyncio.create_task(f()) for f in
                                (self._heartbeat_loop, self._fanout_loop, self._revocation_loop)]
            if self.moderation is not None:
                self._background.append(asyncio.create_task(self.moderation.run()))
            log.info("socket replica listening", extra={"fields": {
                "replica": s.replica_id, "url": self.url}})
            self.ready.set()
            await stop.wait()
            await self._drain()
            server.close(close_connections=True)
            await server.wait_closed()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.registry.remove(s.replica_id)
        self.presence.close()

    async def _drain(self) -> None:
        """Leave the registry's list, close every client with 1012 so it reconnects elsewhere,
        and let in-flight requests finish (their effects are durable before their answers)."""
        self.draining = True
        with contextlib.suppress(Exception):
            await self._heartbeat_once()
        conns = [c for users in self.delivery.by_user.values() for c in users]
        log.info("draining", extra={"fields": {"connections": len(conns)}})
        for conn in conns:
            self.delivery.close(conn, CLOSE_RESTARTING, "replica restarting")
        if self._requests:
            await asyncio.wait(self._requests, timeout=self.settings.drain_timeout)
        await self.events.flush()

    async def _heartbeat_once(self) -> None:
        await self.registry.heartbeat(ReplicaInfo(self.settings.replica_id, self.url,
                                                  self.delivery.count, time.time(),
                                                  self.draining))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._heartbeat_once()
            except Exception:
                log.exception("heartbeat failed")

    async def _fanout_loop(self) -> None:
        while True:
            try:
                async for env in self.fanout.subscribe():
                    if env.origin == self.settings.replica_id:
                        continue
                    if env.kind == MODERATION_ENVELOPE:
                        if self.moderation is not None:
                            self.moderation.on_envelope(env)
                        continue
                    if env.frames and env.conversation_id is not None:
                        self.ops.forget(env.conversation_id)  # membership changed elsewhere
                    elif env.event in CHANGED_MESSAGE_EVENTS and env.event_seq is not None:
                        self.ops.note_message(_changed_message.decode(env.frame).data.message,
                                              env.event_seq)
                    self.delivery.dispatch(env)
                return
            except Exception:
                log.exception("fan-out subscription failed; resubscribing")
                await asyncio.sleep(0.5)

    async def _revocation_loop(self) -> None:
        while True:
            await asyncio.sleep(REVOCATION_POLL_S)
            try:
                since = rfc3339(time.time() - 10 * REVOCATION_POLL_S)
                for session_id in await self.store.revoked_sessions_since(since):
                    self.delivery.close_session(session_id, CLOSE_SESSION_REVOKED,
                                                "session revoked")
                # Backs up the app-level revoke envelope: one read per app connected here.
                for app_id in self.delivery.apps():
                    app = await self.store.get_app(app_id)
                    if app is None or app.disabled:
                        self.delivery.close_app(app_id, CLOSE_USER_BANNED, "app disabled")
            except Exception:
                log.exception("revocation poll failed")

    # -- HTTP on the same port, and the handshake ----------------------------------------------
    async def _process_request(self, connection: ServerConnection,
                               request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if url.path == "/readyz":
            return await self._readiness(connection)
        if url.path == "/metrics":
            body = generate_latest(self.metrics.registry)
            return Response(200, "OK", Headers([
                ("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                ("Content-Length", str(len(body)))]), body)
        if self.draining:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "replica restarting\n")
        token = _bearer(request.headers.get("Authorization"))
        if token is None:
            token = next(iter(parse_qs(url.query).get("access_token", [])), None)
        if not token:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing access token\n")
        try:
            claims = self.tokens.verify(token, "access")
            session = await self.store.get_session(claims.session_id)
            if session is None or session.revoked_at is not None:
                raise Unauthorized("session revoked")
            app = await self.store.get_app(claims.app_id)
            if app is None or app.disabled:
                raise Unauthorized("app disabled")
            if self.moderation is not None and await self.moderation.banned(claims.app_id,
                                                                            claims.user_id):
                return None  # upgraded, then closed with 4003 by the handler (no claims)
        except Unauthorized as exc:
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"{exc.message}\n")
        except ChatError as exc:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc.message}\n")
        self._pending[connection] = claims
        return None

    async def _readiness(self, connection: ServerConnection) -> Response:
        if self.draining:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        try:
            await self.store.ping()
        except Exception as exc:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"store: {exc}\n")
        return connection.respond(HTTPStatus.OK, "ready\n")

    # -- one connection ------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        claims = self._pending.pop(ws, None)
        if claims is None:  # a banned user: tell them why, in a close code a browser can read
            await ws.close(CLOSE_USER_BANNED, "user banned")
            return
        s = self.settings
        conn = ClientConnection(ws, claims, new_id("k"), TokenBucket(s.frame_burst, s.frame_rate))
        local = self.delivery.add(conn)
        self.metrics.connections.set(self.delivery.count)
        conn.send(encode_event("ready", {"user_id": conn.user_id, "session_id": conn.session_id,
                                         "replica": s.replica_id, "server_time": now_rfc3339()}))
        try:
            try:
                await self.presence.connected(conn, local)
            except Exception:
                log.exception("presence update failed")
            async for frame in ws:
                self._on_frame(conn, frame)
        except ConnectionClosed:
            pass
        finally:
            local = self.delivery.remove(conn)
            self.metrics.connections.set(self.delivery.count)
            try:
                await self.presence.disconnected(conn, local)
            except Exception:
                log.exception("presence update failed")

    def _on_frame(self, conn: ClientConnection, frame: str | bytes) -> None:
        self.metrics.frames_in.inc()
        started = time.perf_counter()
        wait = conn.bucket.take()
        if wait > 0:
            conn.rate_limited_streak += 1
            if conn.rate_limited_streak > ABUSE_STREAK:
                self.delivery.close(conn, CLOSE_POLICY, "rate limit ignored")
                return
            self._reply_error(conn, peek_request_id(frame), RateLimited(
                "too many frames; slow down", retry_after_ms=max(1, math.ceil(wait * 1000))))
            return
        conn.rate_limited_streak = 0
        try:
            request = decode_request(frame, self.settings.max_frame_bytes)
        except FrameError as exc:
            self._reply_error(conn, exc.request_id, exc.error)
            return
        if conn.in_flight >= self.settings.max_in_flight:
            self._reply_error(conn, request.id, RateLimited(
                f"more than {self.settings.max_in_flight} requests unanswered",
                retry_after_ms=50))
            return
        if len(self._requests) >= self.settings.max_replica_in_flight:
            self._reply_error(conn, request.id, RateLimited(
                "this replica is overloaded; retry, or use another URL", retry_after_ms=200))
            return
        conn.in_flight += 1
        ticket = self.ops.admit(conn, request.op, request.data)
        task = asyncio.get_running_loop().create_task(self._run(conn, request.id, request.op,
                                                                request.data, started, ticket))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _run(self, conn: ClientConnection, request_id: str | None, op: str, data: Any,
                   started: float, ticket: SendTicket | None) -> None:
        CURRENT_TICKET.set(ticket)  # this task's own context: no reset needed
        try:
            result = await self.ops.handlers[op](conn, data)
            frame = encode_ok(request_id, result)
        except ChatError as exc:
            self.metrics.errors.labels(exc.code).inc()
            frame = encode_error(request_id, exc)
        except Exception:
            log.exception("op failed", extra={"fields": {"op": op}})
            self.metrics.errors.labels("internal").inc()
            frame = encode_error(request_id, ChatError("internal error"))
        finally:
            conn.in_flight -= 1
            if ticket is not None:
                ticket.release()  # also when the request failed before its turn
        self._send(conn, frame)
        self.metrics.op_latency.labels(op).observe(time.perf_counter() - started)

    def _reply_error(self, conn: ClientConnection, request_id: str | None,
                     error: ChatError) -> None:
        self.metrics.errors.labels(error.code).inc()
        self._send(conn, encode_error(request_id, error))

    def _send(self, conn: ClientConnection, frame: bytes) -> None:
        conn.send(frame)
        self.metrics.frames_out.inc()
        if conn.queued_bytes() > self.settings.max_queued_bytes:
            self.metrics.slow_disconnects.inc()
            self.delivery.close(conn, CLOSE_TRY_AGAIN_LATER, "too slow to read responses")


def _bearer(value: str | None) -> str | None:
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None

