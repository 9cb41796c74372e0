"""The Redis sequencer when Redis loses its data, and the cost of its MongoDB marks.

"Flush" here deletes only this test's keys (``chat:test:<ns>:*``): the Redis server is shared,
so FLUSHDB/FLUSHALL are never used. For the sequencer that is the same event: its keys vanish.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from chatcluster.adapters.redis.sequencer import RedisSequencer
from tests.contract import backend_redis
from tests.contract.test_sequencer_contract import draft

pytestmark = pytest.mark.skipif(
    not backend_redis.available() or "sequencer" not in backend_redis.PORTS,
    reason="needs CHAT_CACHE_URL and CHAT_STORE_URL (eval \"$(scripts/services up)\")")


class Namespace:
    def __init__(self) -> None:
        self.ns = uuid.uuid4().hex[:12]
        self.prefix = backend_redis.prefix(self.ns)
        self.redis = Redis.from_url(backend_redis.redis_url())
        self.mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            backend_redis.mongodb_url())
        self.opened: list[RedisSequencer] = []

    def open(self, block: int) -> RedisSequencer:
        seq = backend_redis.open_sequencer(self.ns, block)
        self.opened.append(seq)
        return seq

    async def flush(self) -> int:
        """Delete every key of this namespace (what FLUSHDB does to the sequencer)."""
        keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}*", count=1000)]
        return await self.redis.delete(*keys) if keys else 0

    async def marks(self, conv: str) -> dict[str, object] | None:
        db = self.mongo.get_database(backend_redis.hwm_database())
        return await db.get_collection(backend_redis.hwm_collection(self.ns)).find_one(
            {"_id": conv})

    async def close(self) -> None:
        for seq in self.opened:
            await seq.close()
        await self.flush()
        await self.mongo.get_database(backend_redis.hwm_database()).drop_collection(
            backend_redis.hwm_collection(self.ns))
        await self.mongo.close()
        await self.redis.aclose()


@pytest.fixture
async def space() -> AsyncIterator[Namespace]:
    space = Namespace()
    yield space
    await space.close()


async def test_numbers_continue_strictly_above_everything_after_flushes(space) -> None:
    seq = space.open(block=5)
    handed_seq: list[int] = []
    handed_ev: list[int] = []
    for cycle in range(4):
        for i in range(7):
            r = await seq.reserve_message(draft("c", "a", f"{cycle}-{i}"))
            handed_seq.append(r.message.seq)
            handed_ev.append(r.event_seq)
            handed_ev.append(await seq.next_event_seq("c"))
        assert await space.flush() > 0
    assert handed_seq == sorted(set(handed_seq)), "never backwards, never repeated"
    assert handed_ev == sorted(set(handed_ev))
    # each flush skips at most the unused rest of a block (block + 1 numbers)
    assert handed_seq[-1] <= 28 + 3 * (5 + 1)


async def test_last_seq_after_a_flush_bounds_every_seq_and_the_next_is_above(space) -> None:
    seq = space.open(block=5)
    last = [(await seq.reserve_message(draft("c", "a", str(i)))).message.seq for i in range(3)]
    await space.flush()
    bound = await space.open(block=5).last_seq("c")
    assert bound >= last[-1]
    assert (await seq.reserve_message(draft("c", "a", "next"))).message.seq > bound
    assert await seq.last_seq("never-used") == 0


async def test_what_a_flush_costs_a_resend_gets_a_new_number(space) -> None:
    """Documented limit: the reservation is gone, so a resend after a flush is new to Redis
    (the Store's unique (conversation, sender, client_msg_id) index keeps the first copy)."""
    seq = space.open(block=1000)
    first = await seq.reserve_message(draft("c", "a", "x", mid="m1"))
    assert await seq.reserved_message("m1") == first.message
    await space.flush()
    assert await seq.reserved_message("m1") is None
    again = await seq.reserve_message(draft("c", "a", "x", mid="m2"))
    assert again.created is True and again.message.seq > first.message.seq


async def test_extend_writes_mongodb_once_per_block(space) -> None:
    sequential = space.open(block=5)
    for i in range(12):
        await sequential.reserve_message(draft("c1", "a", str(i)))
    # 1 rebuild (a read) + 2 extends: 0 -> 6 -> 12, each covering block + 1 numbers
    assert (sequential.rebuilds, sequential.extends) == (1, 2)
    marks = await space.marks("c1")
    assert marks is not None and (marks["seq"], marks["ev"]) == (12, 12)

    concurrent = space.open(block=5)
    results = await asyncio.gather(*(concurrent.reserve_message(draft("c2", "a", str(i)))
                                     for i in range(12)))
    assert sorted(r.message.seq for r in results) == list(range(1, 13))
    assert concurrent.extends <= 3, "callers waiting on one conversation share one write"
    assert concurrent.rebuilds == 1


async def test_two_instances_racing_through_flushes_stay_unique(space) -> None:
    replicas = [space.open(block=10), space.open(block=10)]
    flushed = 0

    async def flusher() -> None:
        nonlocal flushed
        for _ in range(4):  # four flushes while 400 numbers are being handed out
            await asyncio.sleep(0.03)
            flushed += bool(await space.flush())

    flushing = asyncio.create_task(flusher())
    reserved, events = await asyncio.gather(
        asyncio.gather(*(replicas[i % 2].reserve_message(draft("c", f"s{i % 3}", str(i)))
                         for i in range(300))),
        asyncio.gather(*(replicas[i % 2].next_event_seq("c") for i in range(100))))
    await flushing
    seqs = [r.message.seq for r in reserved]
    evs = [r.event_seq for r in reserved] + list(events)
    assert len(set(seqs)) == len(seqs) == 300, "no seq handed out twice"
    assert len(set(evs)) == len(evs) == 400, "no event_seq handed out twice"
    assert flushed >= 1 and sum(s.rebuilds for s in replicas) >= 2


async def test_sequential_numbers_from_two_instances_only_grow_across_flushes(space) -> None:
    replicas = [space.open(block=4), space.open(block=4)]
    previous = 0
    for i in range(60):
        if i % 13 == 12:
            await space.flush()
        r = await replicas[i % 2].reserve_message(draft("c", "a", str(i)))
        assert r.message.seq > previous and r.event_seq > previous
        previous = max(r.message.seq, r.event_seq)


async def test_a_stale_rebuild_cannot_restart_numbering(space) -> None:
    """A rebuilder that read the marks, stalled, and wrote its counter after a second flush
    must not hand out numbers again: its first EXTEND is refused (epoch fence)."""
    seq = space.open(block=5)
    handed = [(await seq.reserve_message(draft("c", "a", str(i)))).message.seq
              for i in range(9)]
    await space.flush()
    # The stalled rebuilder writes marks it read before any of the above (0, 0).
    await seq._init(keys=[seq.counter_key("c")], args=[0, 0, "stale-epoch"])
    nxt = await seq.reserve_message(draft("c", "a", "after"))
    assert nxt.message.seq > max(handed)
    assert seq.rebuilds >= 2, "the refused counter was dropped and rebuilt from fresh marks"
