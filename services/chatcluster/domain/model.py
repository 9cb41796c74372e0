"""The platform's objects, as stored and as sent on the wire.

Wire objects (``Message``, ``ConversationView``) have exactly the fields of the public
contract (PROTOCOL.md, "Objects"). Stored states (``MessageState``, ``ConversationState``) add
what the rules need: the tenant, and the ``event_seq`` that last changed each field, so that
changes can be applied in any order, more than once, and still converge (last writer by
``event_seq`` wins, deletion is final).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

ConversationType = Literal["direct", "group"]
Role = Literal["admin", "member"]


class ForwardedFrom(msgspec.Struct, frozen=True):
    message_id: str
    conversation_id: str
    sender_id: str


class Message(msgspec.Struct, kw_only=True):
    """The contract's ``message`` object. User ids are the app's external ids."""

    id: str
    conversation_id: str
    seq: int
    sender_id: str
    text: str
    client_msg_id: str
    created_at: str
    edited_at: str | None = None
    deleted: bool = False
    reactions: dict[str, list[str]] = {}
    reply_to: str | None = None
    forwarded_from: ForwardedFrom | None = None
    attachments: list[dict[str, Any]] = []


class MessageState(msgspec.Struct, kw_only=True):
    """A message as stored, with the per-field versions that make changes commute.

    ``reaction_marks[emoji][user]`` is the ``event_seq`` of that user's last add (positive) or
    remove (negative) of that emoji; the visible reactions are the positive marks.
    """

    app_id: str
    message: Message
    text_event_seq: int
    reaction_marks: dict[str, dict[str, int]] = {}
    last_event_seq: int


class ConversationState(msgspec.Struct, kw_only=True):
    """Membership and metadata of a conversation; ``version`` is the event_seq that last changed it.

    ``members`` is in joining order: when the owner leaves a group, the oldest member inherits it.
    """

    id: str
    app_id: str
    type: ConversationType
    title: str | None
    members: list[str]
    owner: str | None
    admins: list[str]
    created_at: str
    version: int
    direct_key: str | None = None


class ConversationActivity(msgspec.Struct, kw_only=True):
    """What the pipeline derives from a conversation's events (maximums, so order is free)."""

    last_seq: int = 0
    last_event_seq: int = 0
    last_message_at: str | None = None


class ConversationView(msgspec.Struct, kw_only=True):
    """The contract's ``conversation`` object as one caller sees it."""

    id: str
    type: ConversationType
    title: str | None
    members: list[str]
    owner: str | None
    admins: list[str]
    created_at: str
    last_seq: int
    last_event_seq: int
    last_message_at: str | None
    last_read_seq: int
    unread_count: int
    read_marks: dict[str, int] | None


class App(msgspec.Struct, kw_only=True):
    """A tenant. Only a SHA-256 digest of the random, high-entropy secret is kept."""

    id: str
    name: str
    secret_digest: str
    created_at: str
    disabled: bool = False


class Session(msgspec.Struct, kw_only=True):
    """A signed-in device. ``refresh_jti`` is the only refresh token that may still be used."""

    id: str
    app_id: str
    user_id: str
    refresh_jti: str
    created_at: str
    revoked_at: str | None = None
