"""Store: the durable state of the platform.

Guarantees:
- Durable on return: a completed write survives the crash of any process.
- Conversations are written by socket replicas with compare-and-set on ``version``
  (``save_conversation`` raises ``VersionConflict`` if another change won the race).
- Messages, the sync log and conversation activity are written only by the pipeline's
  consumers through ``write_pipeline_batch``, which is idempotent: replaying a batch, or any
  suffix of the log, changes nothing. One consumer owns a conversation (its bus partition) at a
  time, so message states need no compare-and-set.
- Reads see every write that returned before they started (read-your-writes per process).
"""

from __future__ import annotations

import base64
import re
from typing import Literal, Protocol

import msgspec

from chatcluster.domain.errors import BadRequest
from chatcluster.domain.model import (
    App,
    ConversationActivity,
    ConversationState,
    MessageState,
    Session,
)

ReceiptKind = Literal["delivered", "read"]


class LoggedEvent(msgspec.Struct, frozen=True):
    """One entry of a conversation's sync log; its data is read back in its *current* state."""

    conversation_id: str
    event_seq: int
    event: str  # message.new | message.updated | message.deleted | conversation.updated
    message_id: str | None = None


class ReceiptMark(msgspec.Struct, frozen=True):
    conversation_id: str
    user_id: str
    kind: ReceiptKind
    seq: int


class ActivityMark(msgspec.Struct, frozen=True):
    conversation_id: str
    last_seq: int
    last_event_seq: int
    last_message_at: str | None


class ConversationExtras(msgspec.Struct, frozen=True):
    activity: ConversationActivity
    read_marks: dict[str, int]
    unread_count: int  # other members' messages above the user's read mark, tombstones excluded


class PipelineBatch(msgspec.Struct):
    """Everything one consumer batch writes, applied together (in one transaction when the
    backend has them; otherwise each part is idempotent on its own)."""

    new_messages: list[MessageState] = []
    changed_messages: list[MessageState] = []
    events: list[LoggedEvent] = []
    activity: list[ActivityMark] = []
    receipts: list[ReceiptMark] = []


def encode_cursor(sort_at: str, conversation_id: str) -> str:
    """The opaque ``conversation.list`` cursor: where the next page starts."""
    return base64.urlsafe_b64encode(f"{sort_at}|{conversation_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Refuse anything ``encode_cursor`` did not make (strict base64, the right shape)."""
    try:
        raw = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("data.cursor: not a cursor from conversation.list") from None
    sort_at, sep, conversation_id = raw.partition("|")
    if not sep or not conversation_id or not _RFC3339.fullmatch(sort_at):
        raise BadRequest("data.cursor: not a cursor from conversation.list")
    return sort_at, conversation_id


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


class Store(Protocol):
    # tenants, users, sessions ---------------------------------------------------------------
    async def create_app(self, app: App) -> None: ...

    async def get_app(self, app_id: str) -> App | None: ...

    async def list_apps(self, after: str | None, limit: int) -> list[App]:
        """Apps ordered by id, those after ``after``; at most ``limit``."""
        ...

    async def update_app(self, app_id: str, *, name: str | None = None,
                         secret_digest: str | None = None,
                         disabled: bool | None = None) -> App | None:
        """Change the given fields; the updated app, or None if there is no such app."""
        ...

    async def delete_app(self, app_id: str) -> bool:
        """Remove the app: its credentials and tokens stop working (its data is left, unreachable
        through any token)."""
        ...

    async def ensure_user(
        self, app_id: str, user_id: str, display_name: str | None, now: str
    ) -> None: ...

    async def display_names(self, app_id: str, user_ids: list[str]) -> dict[str, str | None]:
        """Known users among ``user_ids`` and their display names."""
        ...

    async def create_session(self, session: Session) -> None: ...

    async def sign_in(self, session: Session, display_name: str | None) -> None:
        """``ensure_user`` for the session's user (at ``session.created_at``), then
        ``create_session``: the token route's writes, in one round trip where the backend can."""
        ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def rotate_refresh(self, session_id: str, old_jti: str, new_jti: str) -> bool:
        """Compare-and-set of the session's live refresh token; False if ``old_jti`` is stale."""
        ...

    async def revoke_session(self, session_id: str, now: str) -> None: ...

    async def revoked_sessions_since(self, since: str) -> list[str]: ...

    # conversations ----------------------------------------------------------------------------
    async def create_conversation(self, conversation: ConversationState) -> ConversationState:
        """Insert; for a direct conversation whose pair exists already, return the existing one."""
        ...

    async def get_conversation(self, conversation_id: str) -> ConversationState | None: ...

    async def save_conversation(
        self, conversation: ConversationState, expected_version: int
    ) -> None:
        """Compare-and-set on ``version``; also logs ``conversation.updated`` at its version."""
        ...

    async def list_conversations(
        self, app_id: str, user_id: str, limit: int, cursor: str | None
    ) -> tuple[list[ConversationState], str | None]:
        """The user's conversations, newest activity first, and the next page's cursor."""
        ...

    async def conversation_extras(
        self, conversation_ids: list[str], user_id: str
    ) -> dict[str, ConversationExtras]:
        """Activity, read marks and ``user_id``'s unread count of each conversation, in one read."""
        ...

    async def related_users(self, app_id: str, user_id: str, others: list[str] | None) -> set[str]:
        """Users who share a conversation with ``user_id`` (among ``others`` if given)."""
        ...

    # messages ---------------------------------------------------------------------------------
    async def get_messages(self, message_ids: list[str]) -> dict[str, MessageState]: ...

    async def history(
        self, conversation_id: str, before_seq: int | None, after_seq: int | None, limit: int
    ) -> tuple[list[MessageState], bool]: ...

    async def sync_log(
        self, conversation_id: str, after_event_seq: int, limit: int
    ) -> tuple[list[LoggedEvent], bool]: ...

    async def write_pipeline_batch(self, batch: PipelineBatch) -> list[ReceiptMark]:
        """Apply a consumer batch idempotently; return the receipt marks that moved forward."""
        ...

    async def ping(self) -> None:
        """Raise if the backend cannot be reached (readiness)."""
        ...

    async def close(self) -> None: ...
