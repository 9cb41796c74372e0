"""Request payloads, one Struct per op (PROTOCOL.md §2 "Operations").

Unknown fields are ignored so that newer SDKs work against older servers; wrong types,
missing fields and values out of range are refused with the field's path in the message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from chatcluster.domain.moderation import MAX_FLAG_NOTE, FlagReason
from chatcluster.domain.rules import MAX_GROUP_MEMBERS

Id = Annotated[str, Meta(min_length=1, max_length=128)]
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=128)]
# Text length is checked by the domain (4,000 characters); this bound only stops absurd values
# before they reach it. The frame limit (64 KiB) bounds everything anyway.
Text = str
Seq = Annotated[int, Meta(ge=0)]
UserList = Annotated[list[Id], Meta(max_length=MAX_GROUP_MEMBERS)]
LookupList = Annotated[list[Id], Meta(max_length=100)]


class Op(msgspec.Struct, kw_only=True):
    """Base of every request payload."""


class ConversationCreate(Op):
    type: Literal["direct", "group"]
    members: UserList
    title: str | None = None


class ConversationList(Op):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20
    cursor: str | None = None


class ConversationRef(Op):
    conversation_id: Id


class ConversationUpdate(Op):
    conversation_id: Id
    title: str


class ConversationMembers(Op):
    conversation_id: Id
    members: Annotated[list[Id], Meta(min_length=1, max_length=MAX_GROUP_MEMBERS)]


class ConversationSetRole(Op):
    conversation_id: Id
    user_id: Id
    role: Literal["admin", "member"]


class ConversationSync(Op):
    conversation_id: Id
    after_event_seq: Seq
    limit: Annotated[int, Meta(ge=1, le=500)] = 100


class MessageSend(Op):
    conversation_id: Id
    client_msg_id: ClientMsgId
    text: Text
    reply_to: Id | None = None
    attachments: list[dict[str, Any]] = []


class MessageEdit(Op):
    message_id: Id
    text: Text


class MessageRef(Op):
    message_id: Id


class MessageForward(Op):
    message_id: Id
    conversation_id: Id
    client_msg_id: ClientMsgId


class Reaction(Op):
    message_id: Id
    emoji: str


class MessageFlag(Op):
    message_id: Id
    reason: FlagReason = "other"
    note: Annotated[str, Meta(max_length=MAX_FLAG_NOTE)] | None = None


class MessageHistory(Op):
    conversation_id: Id
    before_seq: Seq | None = None
    after_seq: Seq | None = None
    limit: Annotated[int, Meta(ge=1, le=100)] = 50


class Receipt(Op):
    conversation_id: Id
    seq: Seq


class UserLookup(Op):
    users: LookupList


class Ping(Op):
    pass


OPS: dict[str, type[Op]] = {
    "conversation.create": ConversationCreate,
    "conversation.list": ConversationList,
    "conversation.get": ConversationRef,
    "conversation.update": ConversationUpdate,
    "conversation.add_members": ConversationMembers,
    "conversation.remove_members": ConversationMembers,
    "conversation.leave": ConversationRef,
    "conversation.set_role": ConversationSetRole,
    "conversation.sync": ConversationSync,
    "message.send": MessageSend,
    "message.edit": MessageEdit,
    "message.delete": MessageRef,
    "message.forward": MessageForward,
    "message.flag": MessageFlag,
    "reaction.add": Reaction,
    "reaction.remove": Reaction,
    "message.history": MessageHistory,
    "receipt.delivered": Receipt,
    "receipt.read": Receipt,
    "typing.start": ConversationRef,
    "typing.stop": ConversationRef,
    "presence.get": UserLookup,
    "user.get": UserLookup,
    "ping": Ping,
}
