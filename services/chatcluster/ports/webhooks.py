"""WebhookStore: an app's webhook endpoints, the durable outbox of deliveries, dead letters.

    endpoints       per app: url, secret, subscribed event types, enabled
    deliveries      the outbox: one row per (endpoint, event), id fixed across every retry
                    pending -> delivered | dead;  dead -> pending again on replay
    member marks    the last membership seen per conversation, so the consumer can turn
                    ``conversation.updated`` into member.added / member.removed

Guarantees:
- Durable on return (the bus offset is committed only after ``enqueue`` returned, so a
  restart of the consumers never loses a pending delivery).
- ``enqueue`` is idempotent by delivery id: a replayed bus record enqueues nothing new, and
  never resets a delivery that was already attempted.
- ``claim_due`` leases each delivery to one caller until ``lease_until``: two dispatchers
  never send the same delivery at once (a crashed one's lease simply runs out).
- ``save_members`` only moves forward (by ``version``), so replays and reordering converge.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

MESSAGE_SENT = "message.sent"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
REACTION_ADDED = "reaction.added"
REACTION_REMOVED = "reaction.removed"
CONVERSATION_UPDATED = "conversation.updated"
MEMBER_ADDED = "member.added"
MEMBER_REMOVED = "member.removed"
USER_BANNED = "user.banned"
USER_UNBANNED = "user.unbanned"
MESSAGE_FLAGGED = "message.flagged"
EVENT_TYPES = (MESSAGE_SENT, MESSAGE_EDITED, MESSAGE_DELETED, REACTION_ADDED, REACTION_REMOVED,
               CONVERSATION_UPDATED, MEMBER_ADDED, MEMBER_REMOVED, USER_BANNED, USER_UNBANNED,
               MESSAGE_FLAGGED)

DeliveryStatus = Literal["pending", "delivered", "dead"]


class Endpoint(msgspec.Struct, kw_only=True):
    id: str
    app_id: str
    url: str
    secret: str
    event_types: list[str]
    enabled: bool = True
    description: str | None = None
    created_at: str
    updated_at: str


class Delivery(msgspec.Struct, kw_only=True):
    """One event for one endpoint. ``body`` is the exact JSON sent on every attempt."""

    id: str
    app_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    body: bytes
    created_at: str
    status: DeliveryStatus = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0  # epoch seconds
    lease_until: float = 0.0
    last_status: int | None = None  # the receiver's HTTP status, if it answered
    last_error: str | None = None
    finished_at: str | None = None  # delivered or dead


class AttemptResult(msgspec.Struct, kw_only=True):
    """What one attempt did to a delivery: delivered, retry at ``next_attempt_at``, or dead."""

    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    finished_at: str | None


class MembersMark(msgspec.Struct, frozen=True):
    version: int
    members: list[str]


class WebhookStore(Protocol):
    # endpoints ------------------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> None: ...

    async def get_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None: ...

    async def list_endpoints(self, app_id: str) -> list[Endpoint]:
        """The app's endpoints, oldest first."""
        ...

    async def update_endpoint(self, endpoint: Endpoint) -> bool:
        """Replace an existing endpoint (same app and id); False if there is none."""
        ...

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> bool: ...

    # outbox ---------------------------------------------------------------------------------
    async def enqueue(self, deliveries: list[Delivery]) -> int:
        """Insert the deliveries whose id is new; returns how many were new."""
        ...

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due by ``now`` and not leased, leased to the
        caller until ``lease_until``; oldest due first."""
        ...

    async def record_attempt(self, delivery_id: str, result: AttemptResult) -> None:
        """Store an attempt's outcome and release the lease."""
        ...

    async def get_delivery(self, app_id: str, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(self, app_id: str, status: DeliveryStatus | None, limit: int,
                              before: tuple[str, str] | None) -> list[Delivery]:
        """The app's deliveries (with that status), newest first by ``(created_at, id)``,
        strictly below ``before`` (the last one of the previous page)."""
        ...

    async def replay(self, app_id: str, delivery_id: str, now: float) -> Delivery | None:
        """Put a dead delivery back in the outbox (attempts from 0, due now, same id). None if
        there is no such dead delivery."""
        ...

    async def prune_finished(self, finished_before: str, limit: int) -> int:
        """Delete up to ``limit`` delivered or dead deliveries finished before that time
        (RFC 3339); returns how many. Pending ones are never pruned."""
        ...

    # membership marks -----------------------------------------------------------------------
    async def members(self, conversation_id: str) -> MembersMark | None: ...

    async def save_members(self, conversation_id: str, mark: MembersMark) -> None:
        """Keep ``mark`` unless a mark of a higher or equal version is stored already."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
