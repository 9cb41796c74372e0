"""Per-conversation event_seq order on one replica (chatcluster.socket.delivery.ConversationOrder).

PROTOCOL.md "Order": each connection receives the events of one conversation in event_seq
order. Events published by different replicas may arrive out of order; the replica holds an
event that leaves a gap for a short while, and drops one older than what it delivered.
"""

from __future__ import annotations

import asyncio

from chatcluster.ports.fanout import Envelope
from chatcluster.socket.delivery import ConversationOrder

HOLD_S = 0.02  # short hold for gaps that never fill
WAIT_S = 0.1  # comfortably longer than HOLD_S
LONG_HOLD_S = 30.0  # a hold that never ends within a test


def event(conversation_id: str, event_seq: int) -> Envelope:
    return Envelope(kind="event", origin="replica-b", app_id="app", recipients=["alice"],
                    frame=b'{"event_seq": %d}' % event_seq, conversation_id=conversation_id,
                    event_seq=event_seq)


class Recorder:
    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.delivered: list[Envelope] = []
        self.dropped: list[Envelope] = []
        self.order = ConversationOrder(self.delivered.append, self.dropped.append,
                                       hold_s=hold_s)

    def offer(self, conversation_id: str, *event_seqs: int) -> None:
        for seq in event_seqs:
            self.order.offer(event(conversation_id, seq))

    def seqs(self, conversation_id: str = "c1") -> list[int | None]:
        return [e.event_seq for e in self.delivered if e.conversation_id == conversation_id]

    def dropped_seqs(self) -> list[tuple[str | None, int | None]]:
        return [(e.conversation_id, e.event_seq) for e in self.dropped]


async def test_events_in_order_are_delivered_at_once() -> None:
    rec = Recorder()
    rec.offer("c1", 1, 2, 3)

    assert rec.seqs() == [1, 2, 3]
    assert rec.dropped == []


async def test_the_envelope_itself_is_delivered() -> None:
    rec = Recorder()
    env = event("c1", 1)
    rec.order.offer(env)
    assert rec.delivered == [env]


async def test_the_first_event_seen_of_a_conversation_goes_out_whatever_its_number() -> None:
    rec = Recorder()
    rec.offer("c1", 41, 42)
    assert rec.seqs() == [41, 42]


async def test_a_gap_holds_the_later_event_until_the_missing_one_arrives() -> None:
    rec = Recorder(hold_s=LONG_HOLD_S)
    rec.offer("c1", 1, 3)
    assert rec.seqs() == [1]

    rec.offer("c1", 2)
    assert rec.seqs() == [1, 2, 3]
    assert rec.dropped == []


async def test_several_missing_events_release_everything_in_order() -> None:
    rec = Recorder(hold_s=LONG_HOLD_S)
    rec.offer("c1", 1, 5, 3, 4)
    assert rec.seqs() == [1]

    rec.offer("c1", 2)
    assert rec.seqs() == [1, 2, 3, 4, 5]


async def test_a_filled_gap_does_not_deliver_again_when_the_hold_ends() -> None:
    rec = Recorder()
    rec.offer("c1", 1, 3, 2)
    assert rec.seqs() == [1, 2, 3]

    await asyncio.sleep(WAIT_S)
    assert rec.seqs() == [1, 2, 3]
    assert rec.dropped == []


async def test_a_gap_that_never_fills_is_released_after_the_hold_time() -> None:
    rec = Recorder(hold_s=HOLD_S)
    rec.offer("c1", 1, 4, 3)
    assert rec.seqs() == [1]

    await asyncio.sleep(WAIT_S)
    assert rec.seqs() == [1, 3, 4]


async def test_an_event_is_held_for_the_hold_time_not_less() -> None:
    rec = Recorder(hold_s=0.1)
    rec.offer("c1", 1, 3)

    await asyncio.sleep(0.01)
    assert rec.seqs() == [1]
    await asyncio.sleep(0.2)
    assert rec.seqs() == [1, 3]


async def test_after_a_released_gap_the_next_event_goes_out_at_once() -> None:
    rec = Recorder(hold_s=HOLD_S)
    rec.offer("c1", 1, 3)
    await asyncio.sleep(WAIT_S)

    rec.offer("c1", 4)
    assert rec.seqs() == [1, 3, 4]


async def test_a_missing_event_arriving_after_the_hold_is_dropped() -> None:
    rec = Recorder(hold_s=HOLD_S)
    rec.offer("c1", 1, 3)
    await asyncio.sleep(WAIT_S)

    rec.offer("c1", 2)
    assert rec.seqs() == [1, 3]
    assert rec.dropped_seqs() == [("c1", 2)]


async def test_a_partly_filled_gap_releases_what_it_can_and_holds_the_rest() -> None:
    rec = Recorder(hold_s=HOLD_S)
    rec.offer("c1", 1, 3, 5, 2)
    assert rec.seqs() == [1, 2, 3]

    await asyncio.sleep(WAIT_S)
    assert rec.seqs() == [1, 2, 3, 5]


async def test_an_event_older_than_the_last_delivered_is_dropped() -> None:
    rec = Recorder()
    rec.offer("c1", 1, 2, 3)
    rec.offer("c1", 2)
    rec.offer("c1", 3)

    assert rec.seqs() == [1, 2, 3]
    assert rec.dropped_seqs() == [("c1", 2), ("c1", 3)]


async def test_conversations_are_ordered_independently() -> None:
    rec = Recorder(hold_s=LONG_HOLD_S)
    rec.offer("c1", 1)
    rec.offer("c2", 10)
    rec.offer("c1", 3)  # c1 waits for 2
    rec.offer("c2", 11, 12)  # c2 is not held up by c1's gap

    assert rec.seqs("c1") == [1]
    assert rec.seqs("c2") == [10, 11, 12]

    rec.offer("c1", 2)
    assert rec.seqs("c1") == [1, 2, 3]
    assert rec.dropped == []


async def test_one_conversations_hold_does_not_release_another() -> None:
    rec = Recorder(hold_s=HOLD_S)
    rec.offer("c1", 1, 3)
    rec.offer("c2", 1)
    await asyncio.sleep(WAIT_S)

    rec.offer("c2", 3)  # a new gap in c2, just after c1's hold ended
    assert rec.seqs("c1") == [1, 3]
    assert rec.seqs("c2") == [1]

    rec.offer("c2", 2)
    assert rec.seqs("c2") == [1, 2, 3]


async def test_an_old_event_of_one_conversation_is_not_dropped_for_another() -> None:
    rec = Recorder()
    rec.offer("c1", 5)
    rec.offer("c2", 1, 2)

    assert rec.seqs("c2") == [1, 2]
    assert rec.dropped == []


def skip(conversation_id: str, event_seq: int) -> Envelope:
    return Envelope(kind="skip", origin="replica-b", app_id="app",
                    conversation_id=conversation_id, event_seq=event_seq)


async def test_a_skipped_number_releases_the_held_events_without_delivering_anything() -> None:
    rec = Recorder(hold_s=LONG_HOLD_S)
    rec.offer("c1", 1, 3, 4)
    assert rec.seqs() == [1]
    rec.order.offer(skip("c1", 2))  # the replica that took 2 failed and says so
    assert rec.seqs() == [1, 3, 4]
    assert all(e.kind == "event" for e in rec.delivered)


async def test_a_skip_ahead_of_time_is_held_like_an_event() -> None:
    rec = Recorder(hold_s=LONG_HOLD_S)
    rec.offer("c1", 1)
    rec.order.offer(skip("c1", 3))
    rec.offer("c1", 4)
    assert rec.seqs() == [1]
    rec.offer("c1", 2)
    assert rec.seqs() == [1, 2, 4]
