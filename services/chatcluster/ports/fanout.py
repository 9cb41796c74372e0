"""Fanout: hands ready-to-send frames to every socket replica, which delivers them locally.

Guarantees (deliberately weak, like Redis pub/sub and Centrifuge's broker):
- Best effort, at most once: a replica that is down or slow may miss frames. Clients recover
  with ``conversation.sync``; nothing durable depends on the fan-out.
- Per publisher order: frames from one publisher reach each subscriber in publishing order.
  Frames of different publishers may interleave; the socket service restores ``event_seq``
  order per conversation (``socket.delivery``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec


class Envelope(msgspec.Struct, frozen=True, omit_defaults=True):
    """What travels between replicas.

    ``kind`` "event": send ``frame`` (or ``frames[user]``, when each recipient sees its own
    view) to every connection of ``recipients`` (external ids of ``app_id``) except the
    connection ``exclude``. ``kind`` "skip": ``event_seq`` of ``conversation_id`` was burned
    (a failed request took it), deliver nothing. ``kind`` "revoke": close the connections of
    session ``session_id`` with 4001 or, without a session, every connection of ``app_id``
    with 4003 (the app was disabled or deleted). ``kind`` "moderation": a ban, mute or freeze
    changed (``event`` user.banned, user.unbanned or conversation.moderated; ``recipients`` the
    user, or ``conversation_id``): replicas drop what they cached of it and close a banned
    user's connections with 4003 (socket.moderation). ``origin`` is the publishing replica,
    which has delivered locally already (or "gateway" / "retention", which deliver nothing).
    """

    kind: str
    origin: str = ""
    event: str = ""
    app_id: str = ""
    recipients: list[str] = []
    frame: bytes = b""
    frames: dict[str, bytes] = {}
    conversation_id: str | None = None
    event_seq: int | None = None
    exclude: str | None = None
    session_id: str | None = None


class Fanout(Protocol):
    async def publish(self, envelope: Envelope) -> None: ...

    def subscribe(self) -> AsyncIterator[Envelope]:
        """Every envelope published from now on, until ``close``."""
        ...

    async def close(self) -> None: ...
