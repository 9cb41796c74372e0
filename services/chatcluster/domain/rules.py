"""Every authorization rule and state transition of conversations and messages.

All functions are pure: they take the current state, the acting user and the input, and
return the new state or raise a ``ChatError``. Callers supply ids and times. Membership is
checked here and answered ``not_found``, never ``forbidden``, so that a non-member cannot
tell a conversation exists (tenant isolation: PROTOCOL.md "Isolation").
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from chatcluster.domain.errors import BadRequest, Conflict, Forbidden, NotFound
from chatcluster.domain.model import (
    ConversationState,
    ConversationType,
    ForwardedFrom,
    Message,
    MessageState,
    Role,
)

MAX_TEXT_CHARS = 4000
MAX_EMOJI_CHARS = 32
MAX_ATTACHMENTS = 10
# A group is a room, not a broadcast channel: past this, fan-out and read marks change nature.
MAX_GROUP_MEMBERS = 1000
MAX_TITLE_CHARS = 200


# -- conversations -----------------------------------------------------------------------------


def direct_key(a: str, b: str) -> str:
    """The deduplication key of the direct conversation between two users (order-free)."""
    first, second = sorted((a, b))
    return f"{len(first)}:{first}|{second}"


def new_conversation(
    *,
    conversation_id: str,
    app_id: str,
    creator: str,
    type: ConversationType,
    members: list[str],
    title: str | None,
    now: str,
    event_seq: int,
) -> ConversationState:
    others = _unique([m for m in members if m != creator])
    if type == "direct":
        if len(others) != 1:
            raise BadRequest("members: a direct conversation has exactly one other member")
        if title is not None:
            raise BadRequest("title: a direct conversation has no title")
        return ConversationState(
            id=conversation_id,
            app_id=app_id,
            type="direct",
            title=None,
            members=[creator, others[0]],
            owner=None,
            admins=[],
            created_at=now,
            version=event_seq,
            direct_key=direct_key(creator, others[0]),
        )
    _check_title(title)
    if len(others) + 1 > MAX_GROUP_MEMBERS:
        raise BadRequest(f"members: a group has at most {MAX_GROUP_MEMBERS} members")
    return ConversationState(
        id=conversation_id,
        app_id=app_id,
        type="group",
        title=title,
        members=[creator, *others],
        owner=creator,
        admins=[],
        created_at=now,
        version=event_seq,
    )


def require_member(conversation: ConversationState | None, user: str) -> ConversationState:
    if conversation is None or user not in conversation.members:
        raise NotFound("conversation not found")
    return conversation


def _require_manager(conversation: ConversationState, actor: str) -> None:
    require_member(conversation, actor)
    if conversation.type != "group":
        raise BadRequest("conversation_id: only a group conversation can be changed")
    if actor != conversation.owner and actor not in conversation.admins:
        raise Forbidden("only the owner or an admin of the group may do this")


def _check_title(title: str | None) -> None:
    if title is not None and len(title) > MAX_TITLE_CHARS:
        raise BadRequest(f"title: at most {MAX_TITLE_CHARS} characters")


def set_title(
    conversation: ConversationState, actor: str, title: str, event_seq: int
) -> ConversationState:
    _require_manager(conversation, actor)
    _check_title(title)
    return _changed(conversation, event_seq, title=title)


def add_members(
    conversation: ConversationState, actor: str, members: list[str], event_seq: int
) -> ConversationState:
    _require_manager(conversation, actor)
    new = [m for m in _unique(members) if m not in conversation.members]
    if len(conversation.members) + len(new) > MAX_GROUP_MEMBERS:
        raise BadRequest(f"members: a group has at most {MAX_GROUP_MEMBERS} members")
    return _changed(conversation, event_seq, members=[*conversation.members, *new])


def remove_members(
    conversation: ConversationState, actor: str, members: list[str], event_seq: int
) -> ConversationState:
    _require_manager(conversation, actor)
    gone = set(members) & set(conversation.members)
    if conversation.owner in gone:
        raise Forbidden("members: the owner cannot be removed")
    if actor in gone:
        raise BadRequest("members: use conversation.leave to leave a group")
    if actor != conversation.owner and gone & set(conversation.admins):
        raise Forbidden("members: only the owner may remove an admin")
    return _changed(
        conversation,
        event_seq,
        members=[m for m in conversation.members if m not in gone],
        admins=[a for a in conversation.admins if a not in gone],
    )


def leave(conversation: ConversationState, actor: str, event_seq: int) -> ConversationState:
    require_member(conversation, actor)
    if conversation.type != "group":
        raise BadRequest("conversation_id: only a group conversation can be left")
    members = [m for m in conversation.members if m != actor]
    admins = [a for a in conversation.admins if a != actor]
    owner = conversation.owner
    if owner == actor:
        # The role passes to the oldest member: ``members`` is kept in joining order.
        owner = members[0] if members else None
        admins = [a for a in admins if a != owner]
    return _changed(conversation, event_seq, members=members, admins=admins, owner=owner)


def set_role(
    conversation: ConversationState, actor: str, user: str, role: Role, event_seq: int
) -> ConversationState:
    require_member(conversation, actor)
    if conversation.type != "group":
        raise BadRequest("conversation_id: only a group conversation has roles")
    if actor != conversation.owner:
        raise Forbidden("only the owner may change roles")
    if user not in conversation.members:
        raise NotFound("user_id: not a member of this conversation")
    if user == conversation.owner:
        raise BadRequest("user_id: the owner's role cannot be changed")
    admins = [a for a in conversation.admins if a != user]
    if role == "admin":
        admins.append(user)
    return _changed(conversation, event_seq, admins=admins)


def _changed(conversation: ConversationState, event_seq: int, **fields: Any) -> ConversationState:
    return msgspec.structs.replace(conversation, version=event_seq, **fields)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- messages ----------------------------------------------------------------------------------


def check_text(text: str, *, field: str = "text") -> None:
    if not text.strip():
        raise BadRequest(f"{field}: must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequest(f"{field}: at most {MAX_TEXT_CHARS} characters")


def check_emoji(emoji: str) -> None:
    if not 1 <= len(emoji) <= MAX_EMOJI_CHARS:
        raise BadRequest(f"emoji: 1 to {MAX_EMOJI_CHARS} characters")


def check_attachments(attachments: list[dict[str, Any]]) -> None:
    if len(attachments) > MAX_ATTACHMENTS:
        raise BadRequest(f"attachments: at most {MAX_ATTACHMENTS}")


def new_message(
    *,
    message_id: str,
    conversation: ConversationState,
    sender: str,
    client_msg_id: str,
    text: str,
    now: str,
    reply_to: Message | None,
    reply_to_id: str | None,
    attachments: list[dict[str, Any]],
    forwarded_from: ForwardedFrom | None = None,
) -> Message:
    """A draft: ``seq`` is 0 until the Sequencer reserves it."""
    require_member(conversation, sender)
    check_text(text)
    check_attachments(attachments)
    if reply_to_id is not None and (
        reply_to is None or reply_to.conversation_id != conversation.id
    ):
        raise BadRequest("reply_to: no such message in this conversation")
    return Message(
        id=message_id,
        conversation_id=conversation.id,
        seq=0,
        sender_id=sender,
        text=text,
        client_msg_id=client_msg_id,
        created_at=now,
        reply_to=reply_to_id,
        forwarded_from=forwarded_from,
        attachments=attachments,
    )


def forward_source(source: MessageState | None, source_conversation: ConversationState | None,
                   actor: str) -> ForwardedFrom:
    """What a forward copies; the actor must be a member of the source conversation too."""
    require_member(source_conversation, actor)
    if source is None:
        raise NotFound("message not found")
    if source.message.deleted:
        raise Conflict("message_id: a deleted message cannot be forwarded")
    m = source.message
    return ForwardedFrom(message_id=m.id, conversation_id=m.conversation_id, sender_id=m.sender_id)


ChangeKind = Literal["edit", "delete", "reaction.add", "reaction.remove"]


class MessageChange:
    """One change to an existing message, decided by a replica and applied by consumers.

    Changes commute: each field keeps the event_seq that last set it, a change only wins over
    an older one, and deletion is final. So a replayed or reordered batch converges.
    """

    __slots__ = ("actor", "at", "emoji", "event_seq", "kind", "text")

    def __init__(self, kind: ChangeKind, actor: str, event_seq: int, at: str,
                 text: str | None = None, emoji: str | None = None) -> None:
        self.kind = kind
        self.actor = actor
        self.event_seq = event_seq
        self.at = at
        self.text = text
        self.emoji = emoji


def authorize_change(state: MessageState, kind: ChangeKind, actor: str) -> bool:
    """Raise if ``actor`` may not make this change; False when it would change nothing.

    Membership of the conversation is checked by the caller (``require_member``) first.
    """
    m = state.message
    if kind == "delete":
        if m.sender_id != actor:
            raise Forbidden("only the sender may delete a message")
        return not m.deleted
    if m.deleted:
        raise Conflict("message_id: the message was deleted")
    if kind == "edit" and m.sender_id != actor:
        raise Forbidden("only the sender may edit a message")
    return True


def reaction_present(state: MessageState, emoji: str, user: str) -> bool:
    return state.reaction_marks.get(emoji, {}).get(user, 0) > 0


def apply_change(state: MessageState, change: MessageChange) -> MessageState:
    """Apply ``change`` if it is newer than what it overwrites (idempotent, order-free)."""
    msg = state.message
    last = max(state.last_event_seq, change.event_seq)
    if msg.deleted:  # deletion is final; only the bookkeeping moves, as it does for any change
        return msgspec.structs.replace(state, last_event_seq=last)
    if change.kind == "delete":
        # edited_at becomes the deletion's time: a tombstone is the same whatever edits it
        # overtook or followed.
        tomb = msgspec.structs.replace(msg, text="", deleted=True, reactions={}, attachments=[],
                                       edited_at=change.at)
        return MessageState(app_id=state.app_id, message=tomb,
                            text_event_seq=change.event_seq, reaction_marks={},
                            last_event_seq=last)
    if change.kind == "edit":
        if change.event_seq <= state.text_event_seq:
            return msgspec.structs.replace(state, last_event_seq=last)
        assert change.text is not None
        edited = msgspec.structs.replace(msg, text=change.text, edited_at=change.at)
        return msgspec.structs.replace(state, message=edited,
                                       text_event_seq=change.event_seq, last_event_seq=last)
    assert change.emoji is not None
    marks = {e: dict(users) for e, users in state.reaction_marks.items()}
    per_user = marks.setdefault(change.emoji, {})
    if change.event_seq <= abs(per_user.get(change.actor, 0)):
        return msgspec.structs.replace(state, last_event_seq=last)
    added = change.kind == "reaction.add"
    per_user[change.actor] = change.event_seq if added else -change.event_seq
    shown = msgspec.structs.replace(msg, reactions=visible_reactions(marks))
    return msgspec.structs.replace(state, message=shown, reaction_marks=marks,
                                   last_event_seq=last)


def visible_reactions(marks: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """emoji -> users who currently react with it, in the order they reacted."""
    out: dict[str, list[str]] = {}
    for emoji, users in marks.items():
        present = sorted((seq, user) for user, seq in users.items() if seq > 0)
        if present:
            out[emoji] = [user for _, user in present]
    return out



