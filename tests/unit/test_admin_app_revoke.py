"""An app-level ``revoke`` envelope (chatcluster.socket.delivery): every connection of that app
on the replica closes with 4003, other apps' and the session revoke's behaviour unchanged."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from chatcluster.auth.tokens import Claims
from chatcluster.observability import SocketMetrics
from chatcluster.ports.fanout import Envelope
from chatcluster.socket.connection import ClientConnection, TokenBucket
from chatcluster.socket.delivery import LocalDelivery


class FakeSocket:
    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def connect(delivery: LocalDelivery, app_id: str, user: str, session: str
            ) -> tuple[ClientConnection, FakeSocket]:
    ws = FakeSocket()
    claims = Claims(app_id=app_id, user_id=user, session_id=session, jti="j", expires_at=0)
    conn = ClientConnection(cast(Any, ws), claims, f"k-{user}-{session}", TokenBucket(1, 1))
    delivery.add(conn)
    return conn, ws


async def test_an_app_revoke_closes_only_that_apps_connections_with_4003() -> None:
    delivery = LocalDelivery(SocketMetrics())
    sockets = {name: connect(delivery, app, user, session)[1] for name, app, user, session in (
        ("a1", "app-a", "alice", "s1"), ("a2", "app-a", "bob", "s2"),
        ("a3", "app-a", "alice", "s3"), ("b1", "app-b", "alice", "s4"))}
    assert delivery.apps() == {"app-a", "app-b"}
    delivery.dispatch(Envelope(kind="revoke", origin="gateway", app_id="app-a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert {n: s.closed for n, s in sockets.items()} == {
        "a1": (4003, "app disabled"), "a2": (4003, "app disabled"),
        "a3": (4003, "app disabled"), "b1": None}


async def test_a_session_revoke_still_closes_one_session_with_4001() -> None:
    delivery = LocalDelivery(SocketMetrics())
    _, first = connect(delivery, "app-a", "alice", "s1")
    _, second = connect(delivery, "app-a", "alice", "s2")
    delivery.dispatch(Envelope(kind="revoke", origin="gateway", app_id="app-a",
                               session_id="s1"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert first.closed == (4001, "session revoked") and second.closed is None
