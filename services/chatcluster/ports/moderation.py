"""ModerationStore: bans, mutes, frozen conversations, and the admin's view of users, sessions
and messages (docs/moderation.md).

It lives beside the Store, on the same data (the embedded adapter in ``store.db``, the MongoDB
one in the Store's database), because listing users, a user's sessions, the messages one user
sent or the messages past a retention period are reads of the Store's own tables that the
messaging hot path never needs. It writes only its own tables, except ``erase_profile`` (a
user's display name) — the one change to a Store row that belongs to compliance.

Guarantees:
- Durable on return, like the Store.
- Bans, mutes and freezes are idempotent: setting a state that holds already changes nothing
  and answers False.
- Reads see every write that returned before they started. Socket replicas cache what they
  read here for a short time (``socket.moderation``): the bound on propagation is theirs.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from chatcluster.domain.model import MessageState
from chatcluster.domain.moderation import Ban, Flag, FlagStatus
from chatcluster.ports.store import ReceiptMark


class ConversationModeration(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: str
    frozen: bool = False
    frozen_by: str | None = None
    frozen_at: str | None = None
    muted: list[str] = []  # external ids, sorted


class UserRecord(msgspec.Struct, frozen=True, kw_only=True):
    app_id: str
    user_id: str  # the app's external id
    display_name: str | None
    created_at: str


class SessionDevice(msgspec.Struct, frozen=True, kw_only=True):
    """What the token route saw of the device that signed in or refreshed (best effort)."""

    session_id: str
    app_id: str
    user_id: str
    user_agent: str | None = None
    ip: str | None = None
    last_refresh_at: str | None = None


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    created_at: str
    revoked_at: str | None
    last_refresh_at: str | None
    user_agent: str | None
    ip: str | None


class ModerationStore(Protocol):
    # bans ---------------------------------------------------------------------------------------
    async def set_ban(self, ban: Ban) -> None:
        """Ban (or re-ban with new terms) ``ban.user_id`` of ``ban.app_id``."""
        ...

    async def remove_ban(self, app_id: str, user_id: str) -> bool:
        """Unban; False if the user was not banned."""
        ...

    async def get_ban(self, app_id: str, user_id: str) -> Ban | None: ...

    async def list_bans(self, app_id: str, after: str | None, limit: int) -> list[Ban]:
        """The app's bans ordered by user id, those after ``after``."""
        ...

    async def bans_since(self, since: str) -> list[Ban]:
        """Bans set at or after ``since`` (RFC 3339), every app: what replicas poll."""
        ...

    # conversations ----------------------------------------------------------------------------
    async def set_mute(self, app_id: str, conversation_id: str, user_id: str, muted: bool,
                       by: str, at: str) -> bool:
        """Mute or unmute one user in one conversation; False if that held already."""
        ...

    async def set_frozen(self, app_id: str, conversation_id: str, frozen: bool, by: str,
                         at: str) -> bool:
        """Freeze or unfreeze; False if that held already."""
        ...

    async def conversation_moderation(self, conversation_id: str) -> ConversationModeration: ...

    async def version(self) -> int:
        """A number that grows with every ban, unban, mute, unmute, freeze and unfreeze, read
        after the change is: a replica that sees it unchanged knows its cached moderation
        state is current (one read per poll, however many users and conversations)."""
        ...

    # flags --------------------------------------------------------------------------------------
    async def add_flag(self, flag: Flag) -> Flag:
        """Queue ``flag``; if its id is queued already (the same member flagged the same
        message), change nothing and return the flag kept."""
        ...

    async def get_flag(self, app_id: str, flag_id: str) -> Flag | None: ...

    async def list_flags(self, app_id: str, status: FlagStatus | None,
                         after: tuple[str, str] | None, limit: int) -> list[Flag]:
        """The app's flags, oldest first (by ``(created_at, id)``), those after ``after``."""
        ...

    async def resolve_flags(self, app_id: str, message_id: str, status: FlagStatus, by: str,
                            at: str) -> int:
        """Close every open flag of the message with ``status``; how many were open."""
        ...

    async def flags_by(self, app_id: str, user_id: str) -> list[Flag]:
        """The flags the user made (for their data export), oldest first."""
        ...

    # users and sessions (the Store's users and sessions) ---------------------------------------
    async def record_device(self, device: SessionDevice) -> None:
        """Upsert what was seen of a session's device; None fields keep what was known."""
        ...

    async def list_users(self, app_id: str, prefix: str | None, after: str | None,
                         limit: int) -> list[UserRecord]:
        """Users ordered by external id, those after ``after``; with ``prefix``, those whose
        external id or display name starts with it (case-sensitive)."""
        ...

    async def get_user(self, app_id: str, user_id: str) -> UserRecord | None: ...

    async def user_sessions(self, app_id: str, user_id: str) -> list[SessionInfo]:
        """Every session of the user, newest first."""
        ...

    async def erase_profile(self, app_id: str, user_id: str) -> None:
        """Remove personal data kept about the user: display name, devices' user agent and IP,
        the notes of the flags they made."""
        ...

    # messages (the Store's messages) ----------------------------------------------------------
    async def messages_sent_by(self, app_id: str, user_id: str, after: str | None,
                               limit: int) -> list[MessageState]:
        """Messages the user sent (tombstones included), ordered by id, after ``after``."""
        ...

    async def messages_created_before(self, app_id: str, before: str,
                                      limit: int) -> list[MessageState]:
        """Up to ``limit`` messages of the app created before ``before`` (RFC 3339) that are
        not tombstones yet."""
        ...

    async def receipts_of(self, app_id: str, user_id: str) -> list[ReceiptMark]:
        """The user's delivered and read marks, one per conversation and kind."""
        ...

    async def close(self) -> None: ...
