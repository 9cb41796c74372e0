"""The payloads on the bus: what socket replicas publish and the pipeline consumes.

One Struct per topic, msgpack-encoded. Every payload names its app (tenant) and carries the
``event_seq`` the Sequencer gave it, which makes consumers' writes idempotent and order-free.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from chatcluster.domain.model import ConversationState, Message
from chatcluster.domain.moderation import Flag
from chatcluster.domain.rules import ChangeKind


class MessageSent(msgspec.Struct, frozen=True):
    app_id: str
    message: Message
    event_seq: int


class MessageChanged(msgspec.Struct, frozen=True):
    """On ``message.edited`` (edits, reactions) and ``message.deleted``."""

    app_id: str
    conversation_id: str
    message_id: str
    kind: ChangeKind
    actor: str
    event_seq: int
    at: str
    text: str | None = None
    emoji: str | None = None


class ConversationUpdated(msgspec.Struct, frozen=True):
    app_id: str
    conversation: ConversationState
    event_seq: int


class ReceiptSubmitted(msgspec.Struct, frozen=True):
    """On ``message.delivered``: a client's delivered/read mark, with who should hear of it."""

    app_id: str
    conversation_id: str
    user_id: str
    kind: Literal["delivered", "read"]
    seq: int
    recipients: list[str]
    origin: str | None = None


encoder = msgspec.msgpack.Encoder()


class UserModerated(msgspec.Struct, frozen=True, kw_only=True):
    """A ban or an unban (topic ``user.moderated``, key: the user). ``id`` is the webhook event
    id, fixed when the change is made, so a replayed record announces nothing twice."""

    id: str
    app_id: str
    user_id: str
    event: Literal["user.banned", "user.unbanned"]
    by: str
    at: str
    reason: str | None = None
    expires_at: str | None = None


class MessageFlagged(msgspec.Struct, frozen=True):
    """A member flagged a message (topic ``message.flagged``, key: the message). Published
    again when the member flags it again, so a lost publish can be retried; the webhook event
    id is the flag's, so each endpoint gets it once."""

    app_id: str
    flag: Flag
