"""Webhooks: group "webhooks" turns bus records into outbox deliveries; the dispatcher sends
them.

    bus ──► enqueue_batch ──► WebhookStore outbox (durable) ──► commit offsets
                                      │
              Dispatcher.run: claim due (leased) ──► HttpSender (one try) ──► record attempt
                                                       delivered | retry later | dead letter

Delivery ids are derived from (endpoint, event), and event ids from (conversation, event_seq,
type), so a replayed bus record enqueues nothing new, and a delivery keeps its id across every
retry and a replay from the dead letters. Sending is never on a request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chatcluster.domain.ids import now_rfc3339, rfc3339
from chatcluster.domain.moderation import flag_view
from chatcluster.ports import bus as topics
from chatcluster.ports import webhooks as hooks
from chatcluster.ports.bus import Record
from chatcluster.ports.events import (
    ConversationUpdated,
    MessageChanged,
    MessageFlagged,
    MessageSent,
    UserModerated,
)
from chatcluster.ports.usage import (
    WEBHOOK_DELIVERIES,
    WEBHOOK_FAILURES,
    UsageKey,
    UsageStore,
    day_of,
)
from chatcluster.ports.webhooks import (
    AttemptResult,
    Delivery,
    Endpoint,
    MembersMark,
    WebhookStore,
)

from .outbound import HttpSender, Outcome, RetryPolicy

log = logging.getLogger(__name__)

GROUP = "webhooks"
TOPICS = (topics.MESSAGE_SENT, topics.MESSAGE_EDITED, topics.MESSAGE_DELETED,
          topics.CONVERSATION_UPDATED, topics.USER_MODERATED, topics.MESSAGE_FLAGGED)
CLAIM_BATCH = 100
# Delivered and dead deliveries are kept this long (CHAT_WEBHOOKS_RETENTION_DAYS): long enough
# to look into a receiver's complaint or replay a dead letter after a holiday.
RETENTION_DAYS = 30.0
PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 1000
# How often an idle dispatcher looks for due deliveries (CHAT_WEBHOOKS_POLL_S).
POLL_S = 0.5

_sent = msgspec.msgpack.Decoder(MessageSent)
_changed = msgspec.msgpack.Decoder(MessageChanged)
_conversation = msgspec.msgpack.Decoder(ConversationUpdated)
_moderated = msgspec.msgpack.Decoder(UserModerated)
_flagged = msgspec.msgpack.Decoder(MessageFlagged)
_CHANGE_TYPES = {"edit": hooks.MESSAGE_EDITED, "delete": hooks.MESSAGE_DELETED,
                 "reaction.add": hooks.REACTION_ADDED, "reaction.remove": hooks.REACTION_REMOVED}


class WebhookEvent(msgspec.Struct, frozen=True):
    """The body of every delivery."""

    id: str
    type: str
    app_id: str
    created_at: str
    data: dict[str, Any]
    conversation_id: str | None = None
    event_seq: int | None = None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def event_id(event_type: str, conversation_id: str, event_seq: int) -> str:
    return f"evt_{_digest(event_type, conversation_id, str(event_seq))}"


def delivery_id(endpoint_id: str, event: str) -> str:
    return f"dlv_{_digest(endpoint_id, event)}"


def _conversation_data(u: ConversationUpdated) -> dict[str, Any]:
    c = u.conversation
    return {"conversation": {"id": c.id, "type": c.type, "title": c.title,
                             "members": list(c.members), "owner": c.owner,
                             "admins": list(c.admins), "created_at": c.created_at}}


async def events_from_records(store: WebhookStore, records: list[Record],
                              now: Callable[[], str] = now_rfc3339
                              ) -> tuple[list[WebhookEvent], dict[str, MembersMark]]:
    """The webhook events of a batch, and the membership marks to save once they are queued.

    Member changes are the difference between a ``conversation.updated`` and the membership
    last seen for that conversation (none seen: every member is "added").
    """
    events: list[WebhookEvent] = []
    marks: dict[str, MembersMark] = {}
    for r in records:
        if r.topic == topics.MESSAGE_SENT:
            s = _sent.decode(r.value)
            m = s.message
            events.append(WebhookEvent(
                id=event_id(hooks.MESSAGE_SENT, m.conversation_id, s.event_seq),
                type=hooks.MESSAGE_SENT, app_id=s.app_id, created_at=m.created_at,
                conversation_id=m.conversation_id, event_seq=s.event_seq,
                data={"message": msgspec.to_builtins(m)}))
        elif r.topic in (topics.MESSAGE_EDITED, topics.MESSAGE_DELETED):
            c = _changed.decode(r.value)
            kind = _CHANGE_TYPES[c.kind]
            data: dict[str, Any] = {"conversation_id": c.conversation_id,
                                    "message_id": c.message_id, "actor": c.actor, "at": c.at}
            if c.text is not None:
                data["text"] = c.text
            if c.emoji is not None:
                data["emoji"] = c.emoji
            events.append(WebhookEvent(
                id=event_id(kind, c.conversation_id, c.event_seq), type=kind, app_id=c.app_id,
                created_at=c.at, conversation_id=c.conversation_id, event_seq=c.event_seq,
                data=data))
        elif r.topic == topics.USER_MODERATED:
            mod = _moderated.decode(r.value)
            events.append(WebhookEvent(
                id=mod.id, type=mod.event, app_id=mod.app_id, created_at=mod.at,
                data={"user_id": mod.user_id, "by": mod.by, "at": mod.at,
                      "reason": mod.reason, "expires_at": mod.expires_at}))
        elif r.topic == topics.MESSAGE_FLAGGED:
            flag = _flagged.decode(r.value).flag
            events.append(WebhookEvent(
                id=f"evt_{flag.id}", type=hooks.MESSAGE_FLAGGED, app_id=flag.app_id,
                created_at=flag.created_at, conversation_id=flag.conversation_id,
                data={"flag": flag_view(flag)}))
        elif r.topic == topics.CONVERSATION_UPDATED:
            u = _conversation.decode(r.value)
            cid, at = u.conversation.id, now()
            events.append(WebhookEvent(
                id=event_id(hooks.CONVERSATION_UPDATED, cid, u.event_seq),
                type=hooks.CONVERSATION_UPDATED, app_id=u.app_id, created_at=at,
                conversation_id=cid, event_seq=u.event_seq, data=_conversation_data(u)))
            before = marks.get(cid) or await store.members(cid)
            if before is not None and before.version >= u.event_seq:
                continue  # a replay, or older than what was seen: its changes were announced
            old = set(before.members) if before is not None else set()
            new_members = list(u.conversation.members)
            added = [m for m in new_members if m not in old]
            removed = [m for m in (before.members if before else []) if m not in new_members]
            for kind, who in ((hooks.MEMBER_ADDED, added), (hooks.MEMBER_REMOVED, removed)):
                if who:
                    events.append(WebhookEvent(
                        id=event_id(kind, cid, u.event_seq), type=kind, app_id=u.app_id,
                        created_at=at, conversation_id=cid, event_seq=u.event_seq,
                        data={"conversation_id": cid, "members": who}))
            marks[cid] = MembersMark(u.event_seq, new_members)
    return events, marks


_json = msgspec.json.Encoder()


async def enqueue_batch(store: WebhookStore, records: list[Record]) -> int:
    """Queue one delivery per (subscribed, enabled endpoint, event); returns how many were new.
    Durable when this returns, so the caller may commit the bus offsets."""
    events, marks = await events_from_records(store, records)
    by_app: dict[str, list[Endpoint]] = {}
    deliveries: list[Delivery] = []
    now = now_rfc3339()
    for e in events:
        if e.app_id not in by_app:
            by_app[e.app_id] = await store.list_endpoints(e.app_id)
        body = _json.encode(e)
        for endpoint in by_app[e.app_id]:
            if endpoint.enabled and e.type in endpoint.event_types:
                deliveries.append(Delivery(
                    id=delivery_id(endpoint.id, e.id), app_id=e.app_id,
                    endpoint_id=endpoint.id, event_id=e.id, event_type=e.type, body=body,
                    created_at=now))
    new = await store.enqueue(deliveries)
    # Marks after the deliveries: a crash in between replays the batch against the old marks,
    # which gives the same event ids again (deduplicated), so no change is lost.
    for cid, mark in marks.items():
        await store.save_members(cid, mark)
    return new


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter("chat_webhook_attempts", "Delivery attempts by outcome",
                                ["outcome"], registry=registry)
        self.enqueued = Counter("chat_webhook_enqueued", "Deliveries queued in the outbox",
                                registry=registry)
        self.dead = Counter("chat_webhook_dead_letters", "Deliveries that gave up",
                            registry=registry)
        self.latency = Histogram("chat_webhook_attempt_seconds", "Time of one attempt",
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                 registry=registry)
        self.in_flight = Gauge("chat_webhook_in_flight", "Attempts in progress",
                               registry=registry)


def next_state(delivery: Delivery, outcome: Outcome, policy: RetryPolicy,
               now: float) -> AttemptResult:
    """Pure: what one attempt's outcome does to a delivery."""
    attempts = delivery.attempts + 1
    if outcome.delivered:
        return AttemptResult(status="delivered", attempts=attempts, next_attempt_at=0.0,
                             last_status=outcome.status, last_error=None,
                             finished_at=rfc3339(now))
    if not outcome.retryable or attempts >= policy.max_attempts:
        return AttemptResult(status="dead", attempts=attempts, next_attempt_at=0.0,
                             last_status=outcome.status, last_error=outcome.error,
                             finished_at=rfc3339(now))
    return AttemptResult(status="pending", attempts=attempts,
                         next_attempt_at=now + policy.delay(attempts, outcome.retry_after),
                         last_status=outcome.status, last_error=outcome.error,
                         finished_at=None)


class Dispatcher:
    """Sends due deliveries, at most ``concurrency`` at once, each leased while in flight."""

    def __init__(self, *, store: WebhookStore, usage: UsageStore | None, policy: RetryPolicy,
                 sender: HttpSender, metrics: WebhookMetrics, poll_s: float = POLL_S,
                 concurrency: int = 32, retention_days: float = RETENTION_DAYS) -> None:
        self.store = store
        self.usage = usage
        self.policy = policy
        self.sender = sender
        self.metrics = metrics
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.retention_s = retention_days * 86400
        self._next_prune = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                await self._prune()
                free = self.concurrency - len(tasks)
                due: list[Delivery] = []
                if free > 0:
                    now = time.time()
                    # The lease outlives the attempt (timeout) with room to record it.
                    lease = now + self.policy.timeout_s * 2 + 30
                    try:
                        due = await self.store.claim_due(now, min(free, CLAIM_BATCH), lease)
                    except Exception:
                        log.exception("claiming webhook deliveries failed")
                for delivery in due:
                    task = asyncio.create_task(self.attempt(delivery))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if not due:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_s)
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _prune(self) -> None:
        now = time.time()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_S
        cutoff = rfc3339(now - self.retention_s)
        try:
            for _ in range(100):  # at most 100 batches an hour; the rest waits an hour
                if await self.store.prune_finished(cutoff, PRUNE_BATCH) < PRUNE_BATCH:
                    break
        except Exception:
            log.exception("pruning finished webhook deliveries failed")

    async def attempt(self, delivery: Delivery) -> None:
        """One try; on any failure to record it, the lease runs out and it is tried again."""
        try:
            self.metrics.in_flight.inc()
            started = time.monotonic()
            endpoint = await self.store.get_endpoint(delivery.app_id, delivery.endpoint_id)
            if endpoint is None:
                outcome = Outcome(delivered=False, retryable=False,
                                  error="endpoint deleted")
            elif not endpoint.enabled:
                outcome = Outcome(delivered=False, retryable=False, error="endpoint disabled")
            else:
                outcome = await self.sender.send(
                    endpoint.url, endpoint.secret, delivery_id=delivery.id,
                    event_type=delivery.event_type, attempt=delivery.attempts + 1,
                    body=delivery.body)
            self.metrics.latency.observe(time.monotonic() - started)
            now = time.time()
            result = next_state(delivery, outcome, self.policy, now)
            await self.store.record_attempt(delivery.id, result)
            label = "delivered" if outcome.delivered else (
                "retry" if result.status == "pending" else "dead")
            self.metrics.attempts.labels(label).inc()
            if result.status == "dead":
                self.metrics.dead.inc()
                log.warning("webhook delivery dead-lettered", extra={"fields": {
                    "delivery": delivery.id, "app": delivery.app_id,
                    "error": outcome.error, "attempts": result.attempts}})
            await self._count(delivery, outcome, now)
        except Exception:
            log.exception("webhook attempt failed", extra={"fields": {"delivery": delivery.id}})
        finally:
            self.metrics.in_flight.dec()

    async def _count(self, delivery: Delivery, outcome: Outcome, now: float) -> None:
        if self.usage is None:
            return
        day = day_of(rfc3339(now))
        if outcome.delivered:
            key = UsageKey(delivery.app_id, day, WEBHOOK_DELIVERIES, delivery.id)
        else:  # each failed attempt once: its claim's due time tells replays apart
            key = UsageKey(delivery.app_id, day, WEBHOOK_FAILURES,
                           f"{delivery.id}:{delivery.attempts + 1}:{delivery.next_attempt_at!r}")
        try:
            await self.usage.record([key])
        except Exception:
            log.exception("webhook usage not recorded")
