"""Local fan-out: deliver envelopes to this replica's connections, in event_seq order.

Two replicas may publish events of one conversation in the opposite order of their
``event_seq`` (each took its number, then published), and under load the fan-out between
them lags by tens of milliseconds. ``ConversationOrder`` restores the order: an event that
is next in line goes out at once; one that leaves a gap waits for the missing one. A number
burned by a failed request is announced as a "skip" envelope, so nobody waits for it; only a
number lost with a crashed replica, or an envelope the best-effort fan-out lost, costs the
full ``HOLD_S``. An event older than one already delivered can then only be one that came
after the hold gave up: it is dropped, and the client, seeing the gap, syncs
(PROTOCOL.md "Order", "Read your writes").
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from chatcluster.observability import SocketMetrics
from chatcluster.ports.fanout import Envelope, Fanout
from chatcluster.protocol.errors import (
    CLOSE_SESSION_REVOKED,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_USER_BANNED,
)
from chatcluster.protocol.frames import encode_event
from chatcluster.socket.connection import ClientConnection

log = logging.getLogger(__name__)

# Every number a replica takes is published, or announced as a skip, within the publish
# deadline (operations.PUBLISH_DEADLINE_S), so holding a gap a little longer than that never
# drops an event that is on its way, however loaded the replicas are (a 1 s hold dropped ~7%
# of events at saturation on Kafka). It is waited in full only for a number lost in a crash,
# or an envelope the best-effort fan-out lost.
HOLD_S = 5.0
# Conversations whose last delivered event_seq we remember; forgetting one only means its next
# event is delivered without a gap check.
MAX_TRACKED_CONVERSATIONS = 100_000
# 1 MiB of unsent frames (about 2,000 typical events) before a reader counts as too slow.
DEFAULT_MAX_QUEUED_BYTES = 1 << 20


class ConversationOrder:
    def __init__(self, deliver: Callable[[Envelope], None], drop: Callable[[Envelope], None],
                 hold_s: float = HOLD_S) -> None:
        self._deliver = deliver
        self._drop = drop
        self._hold_s = hold_s
        self._last: OrderedDict[str, int] = OrderedDict()
        self._held: dict[str, dict[int, Envelope]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def offer(self, env: Envelope) -> None:
        cid, seq = env.conversation_id, env.event_seq
        assert cid is not None and seq is not None
        last = self._last.get(cid)
        if last is None or seq == last + 1:
            self._release(cid, env)
            self._drain(cid)
        elif seq <= last:
            self._drop(env)
        else:
            self._held.setdefault(cid, {})[seq] = env
            if cid not in self._timers:
                loop = asyncio.get_running_loop()
                self._timers[cid] = loop.call_later(self._hold_s, self._give_up, cid)

    def _release(self, cid: str, env: Envelope) -> None:
        assert env.event_seq is not None
        self._last[cid] = env.event_seq
        self._last.move_to_end(cid)
        if len(self._last) > MAX_TRACKED_CONVERSATIONS:
            self._last.popitem(last=False)
        if env.kind != "skip":  # a burned number: it only moves the line forward
            self._deliver(env)

    def _drain(self, cid: str) -> None:
        held = self._held.get(cid)
        while held and self._last[cid] + 1 in held:
            self._release(cid, held.pop(self._last[cid] + 1))
        if held is not None and not held:
            del self._held[cid]
            timer = self._timers.pop(cid, None)
            if timer is not None:
                timer.cancel()

    def _give_up(self, cid: str) -> None:
        self._timers.pop(cid, None)
        held = self._held.pop(cid, {})
        for seq in sorted(held):
            if seq > self._last.get(cid, 0):
                self._release(cid, held[seq])


class LocalDelivery:
    def __init__(self, metrics: SocketMetrics,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        self.metrics = metrics
        self.max_queued_bytes = max_queued_bytes
        self.by_user: dict[tuple[str, str], set[ClientConnection]] = {}
        self.by_session: dict[str, set[ClientConnection]] = {}
        self.order = ConversationOrder(self._deliver, self._dropped)
        self._closing: set[asyncio.Task[None]] = set()
        self.count = 0

    def add(self, conn: ClientConnection) -> int:
        """Register a connection; returns the user's number of connections here."""
        users = self.by_user.setdefault((conn.app_id, conn.user_id), set())
        users.add(conn)
        self.by_session.setdefault(conn.session_id, set()).add(conn)
        self.count += 1
        return len(users)

    def remove(self, conn: ClientConnection) -> int:
        key = (conn.app_id, conn.user_id)
        users = self.by_user.get(key, set())
        if conn in users:
            users.discard(conn)
            self.count -= 1
        if not users:
            self.by_user.pop(key, None)
        sessions = self.by_session.get(conn.session_id)
        if sessions is not None:
            sessions.discard(conn)
            if not sessions:
                del self.by_session[conn.session_id]
        return len(users)

    def connections_of(self, app_id: str, user_id: str) -> set[ClientConnection]:
        return self.by_user.get((app_id, user_id), set())

    def dispatch(self, env: Envelope) -> None:
        if env.kind == "revoke":
            if env.session_id is not None:
                self.close_session(env.session_id, CLOSE_SESSION_REVOKED, "session revoked")
            elif env.app_id:  # a disabled or deleted app
                self.close_app(env.app_id, CLOSE_USER_BANNED, "app disabled")
        elif env.event_seq is not None and env.conversation_id is not None:
            self.order.offer(env)  # events and skips
        else:
            self._deliver(env)

    def apps(self) -> set[str]:
        """The apps with a connection here."""
        return {app_id for app_id, _ in self.by_user}

    def close_app(self, app_id: str, code: int, reason: str) -> None:
        for (owner, _), conns in list(self.by_user.items()):
            if owner == app_id:
                for conn in list(conns):
                    self.close(conn, code, reason)

    def close_session(self, session_id: str, code: int, reason: str) -> None:
        for conn in list(self.by_session.get(session_id, ())):
            self.close(conn, code, reason)

    def close(self, conn: ClientConnection, code: int, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        task = asyncio.get_running_loop().create_task(conn.ws.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _deliver(self, env: Envelope) -> None:
        sent = 0
        for user in env.recipients:
            conns = self.by_user.get((env.app_id, user))
            if not conns:
                continue
            frame = env.frames.get(user, env.frame) if env.frames else env.frame
            for conn in conns:
                if conn.conn_id == env.exclude:
                    continue
                conn.send(frame)
                sent += 1
                if conn.queued_bytes() > self.max_queued_bytes:
                    self.metrics.slow_disconnects.inc()
                    log.warning("closing a connection that does not read its events",
                                extra={"fields": {"user": user, "conn": conn.conn_id}})
                    self.close(conn, CLOSE_TRY_AGAIN_LATER, "too slow to read events")
        if sent:
            self.metrics.frames_out.inc(sent)

    def _dropped(self, env: Envelope) -> None:
        self.metrics.out_of_order_drops.inc()


class EventPublisher:
    """Publishes an event: delivered to this replica's connections at once, and handed to the
    other replicas through the Fanout (which skip envelopes of their own origin)."""

    def __init__(self, replica_id: str, delivery: LocalDelivery, fanout: Fanout) -> None:
        self.replica_id = replica_id
        self.delivery = delivery
        self.fanout = fanout
        self._publishing: set[asyncio.Task[None]] = set()

    async def publish(self, exclude: ClientConnection | None, app_id: str, event: str,
                      data: Any, recipients: list[str], conversation_id: str | None = None,
                      event_seq: int | None = None,
                      frames: dict[str, bytes] | None = None) -> None:
        env = Envelope(
            kind="event", origin=self.replica_id, event=event, app_id=app_id,
            recipients=recipients,
            frame=b"" if frames else encode_event(event, data, event_seq), frames=frames or {},
            conversation_id=conversation_id, event_seq=event_seq,
            exclude=exclude.conn_id if exclude is not None else None)
        await self._send(env)

    async def skip(self, app_id: str, conversation_id: str, event_seq: int) -> None:
        """Announce a burned event_seq so no replica holds later events waiting for it."""
        await self._send(Envelope(kind="skip", origin=self.replica_id, app_id=app_id,
                                  conversation_id=conversation_id, event_seq=event_seq))

    async def _send(self, env: Envelope) -> None:
        """Deliver here now; hand to the other replicas without waiting for it: the fan-out is
        best effort, so its write need not delay the answer. Tasks start in creation order,
        so envelopes still leave in publishing order."""
        self.delivery.dispatch(env)
        task = asyncio.get_running_loop().create_task(self.fanout.publish(env))
        self._publishing.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[None]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Best effort by contract: clients recover with conversation.sync.
            log.error("fan-out publish failed", exc_info=task.exception())

    async def flush(self) -> None:
        """Wait for envelopes still being handed to the fan-out (before shutting down)."""
        if self._publishing:
            await asyncio.wait(self._publishing, timeout=5)
