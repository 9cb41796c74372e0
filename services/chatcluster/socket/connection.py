"""One client connection and its limits."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.server import ServerConnection, broadcast

from chatcluster.auth.tokens import Claims


class TokenBucket:
    """``capacity`` frames, refilled at ``rate`` per second (PROTOCOL.md default: 200 and 200)."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 if a frame may pass, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class SendTicket:
    """A place in one connection's line of sends to one conversation.

    Taken by the read loop in frame order (before any await), so two sends from one connection
    to one conversation reserve their seqs in the order they arrived (PROTOCOL.md §2), however
    their lookups interleave. Released once the seq is reserved, or the request failed.
    """

    __slots__ = ("_conn", "_conversation_id", "_gate", "_previous")

    def __init__(self, conn: ClientConnection, conversation_id: str) -> None:
        self._conn = conn
        self._conversation_id = conversation_id
        self._previous = conn.send_tails.get(conversation_id)
        self._gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.send_tails[conversation_id] = self._gate

    async def turn(self) -> None:
        if self._previous is not None and not self._previous.done():
            await asyncio.wait([self._previous])

    def release(self) -> None:
        if not self._gate.done():
            self._gate.set_result(None)
        if self._conn.send_tails.get(self._conversation_id) is self._gate:
            del self._conn.send_tails[self._conversation_id]


class ClientConnection:
    __slots__ = ("app_id", "bucket", "claims", "closing", "conn_id", "in_flight",
                 "rate_limited_streak", "send_tails", "session_id", "user_id", "ws")

    def __init__(self, ws: ServerConnection, claims: Claims, conn_id: str,
                 bucket: TokenBucket) -> None:
        self.ws = ws
        self.claims = claims
        self.app_id = claims.app_id
        self.user_id = claims.user_id
        self.session_id = claims.session_id
        self.conn_id = conn_id
        self.bucket = bucket
        self.in_flight = 0
        self.closing = False
        # Consecutive frames refused for rate: a client that ignores retry_after_ms for this
        # long is abusive and gets closed with 1008.
        self.rate_limited_streak = 0
        # conversation_id -> the gate of the latest send from this connection (SendTicket).
        self.send_tails: dict[str, asyncio.Future[None]] = {}

    def send(self, frame: bytes) -> None:
        """Queue a frame without waiting; the caller checks the queue bound (delivery.py)."""
        broadcast((self.ws,), frame, text=True)

    def queued_bytes(self) -> int:
        transport = self.ws.transport
        return 0 if transport is None else int(transport.get_write_buffer_size())
