"""Sequencer contract: atomic reservation, numbering that never repeats, durability."""

from __future__ import annotations

import asyncio

import msgspec

from chatcluster.domain.model import Message
from chatcluster.ports.sequencer import Sequencer


def draft(conv: str, sender: str, cmid: str, mid: str | None = None) -> Message:
    return Message(id=mid or f"m-{conv}-{sender}-{cmid}", conversation_id=conv, seq=0,
                   sender_id=sender, text=cmid, client_msg_id=cmid,
                   created_at="2026-01-01T00:00:00.000Z")


async def test_reservations_number_messages_and_events_from_one(sequencer_backend) -> None:
    seq: Sequencer = (await sequencer_backend.open())
    first = await seq.reserve_message(draft("c1", "a", "1"))
    second = await seq.reserve_message(draft("c1", "b", "1"))
    assert (first.created, first.message.seq, first.event_seq) == (True, 1, 1)
    assert (second.created, second.message.seq, second.event_seq) == (True, 2, 2)
    other = await seq.reserve_message(draft("c2", "a", "1"))
    assert (other.message.seq, other.event_seq) == (1, 1), "counters are per conversation"
    assert await seq.last_seq("c1") == 2 and await seq.last_seq("nope") == 0


async def test_a_resend_returns_the_reserved_message_unchanged(sequencer_backend) -> None:
    seq: Sequencer = (await sequencer_backend.open())
    first = await seq.reserve_message(draft("c", "a", "x", mid="m1"))
    again = await seq.reserve_message(msgspec.structs.replace(
        draft("c", "a", "x", mid="m2"), text="different"))
    assert again.created is False
    assert again.message == first.message and again.event_seq == first.event_seq
    assert (await seq.reserve_message(draft("c", "a", "y"))).message.seq == 2, "no number burned"


async def test_concurrent_resends_from_two_processes_create_one_message(
        sequencer_backend) -> None:
    replicas: list[Sequencer] = [(await sequencer_backend.open()), (await sequencer_backend.open())]
    results = await asyncio.gather(*(replicas[i % 2].reserve_message(
        draft("c", "a", "same", mid=f"m{i}")) for i in range(20)))
    assert sum(r.created for r in results) == 1
    assert len({r.message.id for r in results}) == 1


async def test_concurrent_reservations_never_share_a_number(sequencer_backend) -> None:
    replicas: list[Sequencer] = [(await sequencer_backend.open()), (await sequencer_backend.open())]
    reserved = await asyncio.gather(*(replicas[i % 2].reserve_message(draft("c", "a", str(i)))
                                      for i in range(60)))
    changes = await asyncio.gather(*(replicas[i % 2].next_event_seq("c") for i in range(20)))
    seqs = sorted(r.message.seq for r in reserved)
    events = sorted([r.event_seq for r in reserved] + changes)
    assert seqs == list(range(1, 61))
    assert events == list(range(1, 81))


async def test_reservations_outlive_the_instance(sequencer_backend) -> None:
    seq: Sequencer = (await sequencer_backend.open())
    kept = await seq.reserve_message(draft("c", "a", "x"))
    await seq.next_event_seq("c")
    await seq.close()
    reopened: Sequencer = (await sequencer_backend.open())
    again = await reopened.reserve_message(draft("c", "a", "x"))
    assert again.created is False and again.message == kept.message
    assert await reopened.reserved_message(kept.message.id) == kept.message
    assert await reopened.reserved_message("unknown") is None
    nxt = await reopened.reserve_message(draft("c", "a", "y"))
    assert nxt.message.seq == 2 and nxt.event_seq == 3, "numbers continue, never repeat"
