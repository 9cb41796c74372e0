"""Presence (online/offline events, ``presence.get``) and typing indicators.

A user is online while any live replica counts a connection of theirs (Registry). Events go
to the users who share a conversation with them, at most once per ``PRESENCE_MIN_INTERVAL_S``
per user: a flapping connection produces one event with the final state, not a storm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from chatcluster.domain.ids import now_rfc3339
from chatcluster.domain.model import ConversationState
from chatcluster.ports.registry import PresenceInfo, Registry
from chatcluster.ports.store import Store
from chatcluster.socket.connection import ClientConnection
from chatcluster.socket.delivery import EventPublisher

PRESENCE_MIN_INTERVAL_S = 5.0  # PROTOCOL.md: at most once per 5 s per user
TYPING_TIMEOUT_S = 6.0  # PROTOCOL.md: typing false when 6 s pass without a new typing.start
# Heartbeats come every second; three missed ones and a replica's users count as offline.
REPLICA_MAX_AGE_S = 3.0


class Presence:
    def __init__(self, replica_id: str, store: Store, registry: Registry,
                 events: EventPublisher) -> None:
        self.replica_id = replica_id
        self.store = store
        self.registry = registry
        self.events = events
        self._deferred: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._typing: dict[tuple[str, str, str], tuple[asyncio.TimerHandle, list[str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def lookup(self, app_id: str, users: list[str]) -> dict[str, PresenceInfo]:
        return await self.registry.presence(app_id, users, REPLICA_MAX_AGE_S)

    async def connected(self, conn: ClientConnection, local_count: int) -> None:
        key = (conn.app_id, conn.user_id)
        elsewhere = local_count > 1 or (await self.lookup(conn.app_id, [conn.user_id]))[
            conn.user_id].online
        await self.registry.set_connections(conn.app_id, conn.user_id, self.replica_id,
                                            local_count, now_rfc3339())
        if not elsewhere:  # the user's first connection anywhere
            self._announce(key)

    async def disconnected(self, conn: ClientConnection, local_count: int) -> None:
        await self.registry.set_connections(conn.app_id, conn.user_id, self.replica_id,
                                            local_count, now_rfc3339())
        if local_count > 0:
            return
        for tkey in [k for k in self._typing if k[0] == conn.app_id and k[2] == conn.user_id]:
            timer, members = self._typing.pop(tkey)
            timer.cancel()
            self._spawn(self._send_typing(None, tkey, members, False))
        if not (await self.lookup(conn.app_id, [conn.user_id]))[conn.user_id].online:
            self._announce((conn.app_id, conn.user_id))  # the user's last connection anywhere

    def _announce(self, key: tuple[str, str], delay: float = 0.0) -> None:
        """Announce the user's current state now, or after ``delay``. The Registry decides which
        replica speaks and keeps it to one event per 5 s per user across replicas."""
        if key in self._deferred:
            return
        if delay <= 0:
            self._spawn(self._send_presence(key))
        else:
            loop = asyncio.get_running_loop()
            self._deferred[key] = loop.call_later(delay, self._deferred_send, key)

    def _deferred_send(self, key: tuple[str, str]) -> None:
        self._deferred.pop(key, None)
        self._spawn(self._send_presence(key))

    async def _send_presence(self, key: tuple[str, str]) -> None:
        app_id, user = key
        info = (await self.lookup(app_id, [user]))[user]
        verdict = await self.registry.claim_announcement(app_id, user, info.online, time.time(),
                                                         PRESENCE_MIN_INTERVAL_S)
        if verdict < 0:
            return  # others already know this state (it flapped back, or another replica told)
        if verdict > 0:
            self._announce(key, verdict)  # too soon: look again when the window ends
            return
        related = sorted((await self.store.related_users(app_id, user, None)) - {user})
        if related:
            await self.events.publish(None, app_id, "presence", {
                "user_id": user, "online": info.online,
                "last_seen": None if info.online else info.last_seen or now_rfc3339()},
                related)

    async def typing(self, conn: ClientConnection, conv: ConversationState, on: bool) -> None:
        key = (conn.app_id, conv.id, conn.user_id)
        previous = self._typing.pop(key, None)
        if previous is not None:
            previous[0].cancel()
        if on:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(TYPING_TIMEOUT_S, self._typing_expired, key)
            self._typing[key] = (timer, list(conv.members))
            if previous is not None:
                return  # still typing: the timer was refreshed, the others know already
        await self._send_typing(conn, key, conv.members, on)

    def _typing_expired(self, key: tuple[str, str, str]) -> None:
        entry = self._typing.pop(key, None)
        if entry is not None:
            self._spawn(self._send_typing(None, key, entry[1], False))

    async def _send_typing(self, conn: ClientConnection | None, key: tuple[str, str, str],
                           members: list[str], on: bool) -> None:
        app_id, conversation_id, user = key
        await self.events.publish(conn, app_id, "typing", {
            "conversation_id": conversation_id, "user_id": user, "typing": on}, members)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for timer in self._deferred.values():
            timer.cancel()
        for timer, _ in self._typing.values():
            timer.cancel()
