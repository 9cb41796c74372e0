"""Moderation and compliance rules: what a ban, a mute and a frozen conversation refuse, when a
ban is over, and which messages a retention period expires. Pure: callers pass states and times.

    banned user   no token, no socket, no op that writes (reads are moot: their sockets close)
    muted member  no message.send / edit / forward into / reaction in that conversation
    frozen        nobody on the socket sends, edits, reacts or changes members, title or roles;
                  leaving is still allowed (nobody is held in a room), and so is deleting one's
                  own message (removing words is never refused)

Moderators act through the admin API, never through the socket, so "moderators may still act in
a frozen conversation" holds by construction: their routes do not consult these rules.

    flag          any member may flag a message of someone else, once (again: the same flag);
                  a tombstone cannot be flagged. Moderators resolve every open flag of a
                  message at once: dismissed (kept) or removed (deleted by a moderator).
"""

from __future__ import annotations

import hashlib
from typing import Literal, get_args

import msgspec

from chatcluster.domain.errors import BadRequest, Forbidden

# What a socket request does to a conversation, as far as moderation cares.
Action = Literal["send", "edit", "react", "delete", "manage", "leave", "read"]

# Stable messages: the code is ``forbidden`` (PROTOCOL.md's list of codes is kept); the first
# word says which state refused, so a client can tell the user why.
BANNED = "banned: this user is banned from the app"
MUTED = "muted: you are muted in this conversation"
FROZEN = "frozen: the conversation is frozen by a moderator"


class Ban(msgspec.Struct, frozen=True, kw_only=True):
    app_id: str
    user_id: str
    by: str  # the admin id (or "root") who banned
    at: str  # RFC 3339
    reason: str | None = None
    expires_at: str | None = None  # RFC 3339; None: until unbanned


class Restrictions(msgspec.Struct, frozen=True, kw_only=True):
    """What applies to one user in one conversation (or in the app, without one)."""

    banned: bool = False
    muted: bool = False
    frozen: bool = False


UNRESTRICTED = Restrictions()


def ban_active(ban: Ban | None, now: str) -> bool:
    """A ban holds until its ``expires_at`` (RFC 3339 strings of one format compare as times)."""
    return ban is not None and (ban.expires_at is None or now < ban.expires_at)


def check_action(restrictions: Restrictions, action: Action) -> None:
    """Raise ``Forbidden`` if the restrictions refuse ``action``."""
    if action in ("read", "leave"):
        return
    if restrictions.banned:
        raise Forbidden(BANNED)
    if action == "delete":
        return
    if restrictions.frozen:
        raise Forbidden(FROZEN)
    if restrictions.muted and action in ("send", "edit", "react"):
        raise Forbidden(MUTED)


def retention_cutoff(now: float, days: int, day_seconds: float = 86_400.0) -> float:
    """Messages created before this unix time are past a retention of ``days`` days.
    ``day_seconds`` is a day's length: shortened only by tests (CHAT_RETENTION_DAY_S)."""
    if days < 1:
        raise ValueError("a retention period is at least one day")
    return now - days * day_seconds



FlagReason = Literal["spam", "harassment", "inappropriate", "other"]
FLAG_REASONS: tuple[str, ...] = get_args(FlagReason)
FlagStatus = Literal["open", "dismissed", "removed"]
MAX_FLAG_NOTE = 500


class Flag(msgspec.Struct, frozen=True, kw_only=True):
    """One member's report of one message, queued for the app's moderators."""

    id: str
    app_id: str
    message_id: str
    conversation_id: str
    sender_id: str  # who wrote the flagged message
    flagged_by: str
    reason: FlagReason
    created_at: str
    note: str | None = None
    status: FlagStatus = "open"
    resolved_by: str | None = None
    resolved_at: str | None = None


def flag_id(app_id: str, message_id: str, flagged_by: str) -> str:
    """One flag per member and message: flagging again finds the same id."""
    digest = hashlib.sha256(f"{app_id}\0{message_id}\0{flagged_by}".encode()).hexdigest()
    return f"flg_{digest[:24]}"


def check_flag(flagger: str, sender: str, deleted: bool) -> None:
    """Raise ``BadRequest`` if this member may not flag this message."""
    if flagger == sender:
        raise BadRequest("message_id: you cannot flag your own message")
    if deleted:
        raise BadRequest("message_id: the message is deleted")


def flag_view(flag: Flag) -> dict[str, str | None]:
    """A flag as the protocol, the admin API and webhooks show it."""
    return {"id": flag.id, "message_id": flag.message_id,
            "conversation_id": flag.conversation_id, "sender_id": flag.sender_id,
            "flagged_by": flag.flagged_by, "reason": flag.reason, "note": flag.note,
            "created_at": flag.created_at, "status": flag.status,
            "resolved_by": flag.resolved_by, "resolved_at": flag.resolved_at}
