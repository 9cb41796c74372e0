"""Bus: the event pipeline's durable log (topics of PROTOCOL.md and the seed design).

Guarantees:
- Durable on return: once ``publish`` returned, the record survives the crash of any process.
- Ordered per key: records published with one key (a conversation id) *by one publisher in
  sequence* are consumed in that order. Records of two replicas may interleave either way.
- At-least-once per consumer group: a record is handed out again until ``commit`` covered it,
  so consumers must write idempotently. Partitions are divided among a group's members.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

MESSAGE_SENT = "message.sent"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
CONVERSATION_UPDATED = "conversation.updated"
MESSAGE_DELIVERED = "message.delivered"
# Extensions of the contract's five, read by the webhooks consumer: bans and unbans (published
# by the gateway) and flagged messages (published by socket replicas).
USER_MODERATED = "user.moderated"
MESSAGE_FLAGGED = "message.flagged"
TOPICS = (MESSAGE_SENT, MESSAGE_EDITED, MESSAGE_DELETED, CONVERSATION_UPDATED, MESSAGE_DELIVERED,
          USER_MODERATED, MESSAGE_FLAGGED)


class Record(msgspec.Struct, frozen=True):
    topic: str
    key: str
    value: bytes
    partition: int
    offset: int


class BusConsumer(Protocol):
    async def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records after the last committed ones; [] after ``timeout``."""
        ...

    async def commit(self, records: list[Record]) -> None:
        """Mark every record up to these (per partition) as processed."""
        ...

    async def rewind(self) -> None:
        """Forget uncommitted progress: the next poll starts after the last commit. Called
        after a failed batch, so its records are handed out again (at-least-once)."""
        ...

    async def lag(self) -> int:
        """Records published but not yet committed by this group."""
        ...

    async def close(self) -> None: ...


class Bus(Protocol):
    async def publish(self, topic: str, key: str, value: bytes) -> None: ...

    def consumer(self, group: str, topics: tuple[str, ...]) -> BusConsumer: ...

    async def close(self) -> None: ...
