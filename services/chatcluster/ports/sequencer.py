"""Sequencer: decides ``seq``, ``event_seq`` and ``client_msg_id`` reservations before the ok.

Guarantees every implementation gives:
- Atomic: ``reserve_message`` either finds the reservation of (conversation, sender,
  client_msg_id) and returns its message unchanged, or assigns the next ``seq`` and the next
  ``event_seq`` of the conversation and records the reservation, as one step, alike for every
  replica. A resend a millisecond later on another replica gets the same message.
- Durable on return: a reservation survives the crash of any process after it returned.
- Monotonic: ``seq`` and ``event_seq`` only grow per conversation; a number handed out once is
  never handed out again (numbers may be burned: gaps are allowed, repeats never).
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from chatcluster.domain.model import Message


class Reservation(msgspec.Struct, frozen=True):
    message: Message
    event_seq: int
    created: bool


class Sequencer(Protocol):
    async def reserve_message(self, draft: Message) -> Reservation:
        """Reserve ``draft`` (its ``seq`` is ignored) or return the message reserved before."""
        ...

    async def next_event_seq(self, conversation_id: str) -> int:
        """The next event_seq of a conversation, for a change that is not a new message."""
        ...

    async def reserved_message(self, message_id: str) -> Message | None:
        """The message as it was reserved, if still kept (bridges the pipeline's lag)."""
        ...

    async def last_seq(self, conversation_id: str) -> int:
        """The highest seq reserved so far in a conversation (0 if none)."""
        ...

    async def close(self) -> None: ...
