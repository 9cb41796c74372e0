"""KafkaBus under faults, on the real broker of ``scripts/services`` (no broker restarts here:
other engineers share the broker; the suite that restarts it comes separately).

- At-least-once across a crash: a consumer process killed with SIGKILL after polling, without
  leaving its group, loses nothing: a new member of the group gets every uncommitted record.
- Commit-after-write: when the crashed member had committed part of its batch, the new one
  resumes exactly after that part, per partition (no gap, no repeat of committed records).
- Per-key order across partitions: many keys published concurrently, read by two members of
  one group: each key stays in one partition, in publishing order, and the members split the
  partitions.
- Fail fast: ``publish`` raises ``Unavailable`` within its timeout when nothing listens on the
  port, or when something accepts connections but never answers (a hung broker); ``poll``
  honours its timeout meanwhile and ``rewind``/``close`` stay quiet.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chatcluster.adapters.kafka.bus import KafkaBus, KafkaBusConsumer
from chatcluster.domain.errors import Unavailable
from chatcluster.ports.bus import Record
from tests.contract import backend_kafka

ROOT = Path(__file__).resolve().parents[2]
# The broker's minimum: a member killed without leaving is dropped from its group this fast.
SESSION_TIMEOUT_MS = 6000
needs_broker = pytest.mark.skipif(not backend_kafka.available(),
                                  reason="CHAT_BUS_URL=kafka://... not set (scripts/services up)")

BusFactory = Callable[[], KafkaBus]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"f{uuid.uuid4().hex[:12]}."
    yield name
    await backend_kafka.delete_topics(backend_kafka.bootstrap_servers(backend_kafka.url()),
                                      {name})


@pytest.fixture
async def new_bus(prefix: str) -> AsyncIterator[BusFactory]:
    """Buses on one set of topics and groups (what separate processes would see)."""
    opened: list[KafkaBus] = []

    def make() -> KafkaBus:
        bus = KafkaBus(backend_kafka.url(), topic_prefix=prefix, group_prefix=prefix,
                       session_timeout_ms=SESSION_TIMEOUT_MS)
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.close()


async def drain(consumer: KafkaBusConsumer, expect: int, deadline_s: float) -> list[Record]:
    got: list[Record] = []
    end = time.monotonic() + deadline_s
    while len(got) < expect and time.monotonic() < end:
        got += await consumer.poll(500, 0.2)
    return got


CRASHING_MEMBER = textwrap.dedent("""
    import asyncio, json, os, signal, sys
    from chatcluster.adapters.kafka.bus import KafkaBus, KafkaBusConsumer

    async def main(url, prefix, expect, commit, session_ms):
        bus = KafkaBus(url, topic_prefix=prefix, group_prefix=prefix,
                       session_timeout_ms=session_ms)
        consumer = bus.consumer("persist", ("message.sent",))
        got = []
        for _ in range(300):
            got += await consumer.poll(500, 0.1)
            if len(got) >= expect:
                break
        # "Wrote" the batch; commits only its first `commit` records, then dies at once:
        # no commit of the rest, no LeaveGroup, no producer flush.
        await consumer.commit(got[:commit])
        print(json.dumps([[r.partition, r.offset] for r in got]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                     int(sys.argv[5])))
""")


async def crash_after_poll(prefix: str, expect: int, commit: int) -> list[tuple[int, int]]:
    """Run a consumer process that polls ``expect`` records, commits ``commit`` of them and
    kills itself with SIGKILL; returns what it polled."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_MEMBER, backend_kafka.url(), prefix, str(expect),
        str(commit), str(SESSION_TIMEOUT_MS), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()  # only our own child
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return [(int(partition), int(offset)) for partition, offset in json.loads(out)]


@needs_broker
@pytest.mark.parametrize("committed", [0, 17], ids=["nothing-committed", "part-committed"])
async def test_a_crashed_members_uncommitted_records_go_to_the_next_member(
        new_bus: BusFactory, prefix: str, committed: int) -> None:
    publisher = new_bus()
    for i in range(40):  # four conversations, so the batch spans several partitions
        await publisher.publish("message.sent", f"conv{i % 4}", str(i).encode())

    polled = await crash_after_poll(prefix, 40, committed)
    assert len(polled) == 40
    # The commit covered, per partition, everything up to the highest committed offset.
    covered: dict[int, int] = defaultdict(lambda: -1)
    for partition, offset in polled[:committed]:
        covered[partition] = max(covered[partition], offset)
    expected = sorted((p, o) for p, o in polled if o > covered[p])
    assert len(expected) >= 40 - committed

    # A new member of the group (a restarted process): it joins once the group has dropped
    # the dead member (session timeout), then resumes at the commits.
    started = time.monotonic()
    successor = new_bus().consumer("persist", ("message.sent",))
    again = await drain(successor, len(expected), 30 + SESSION_TIMEOUT_MS / 1000)
    took = time.monotonic() - started
    assert sorted((r.partition, r.offset) for r in again) == expected, f"after {took:.1f}s"
    # Redelivered in log order within each partition.
    for partition in {r.partition for r in again}:
        offsets = [r.offset for r in again if r.partition == partition]
        assert offsets == sorted(offsets)
    await successor.commit(again)
    assert await successor.lag() == 0
    assert await successor.poll(500, 0.3) == []


async def wait_until_split(consumers: list[KafkaBusConsumer], partitions: int) -> None:
    """Poll every member until the group's rebalance gave each some of the partitions."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        polled = await asyncio.gather(*(c.poll(10, 0.1) for c in consumers))
        assert not any(polled), "nothing was published yet"
        held = [c.assignment() for c in consumers]
        if all(held) and sum(len(h) for h in held) == partitions \
                and len(frozenset().union(*held)) == partitions:
            return
    raise AssertionError("the group never divided its partitions among its members")


@needs_broker
async def test_per_key_order_holds_across_partitions_and_members(new_bus: BusFactory) -> None:
    bus = new_bus()
    await bus.start()
    members = [new_bus().consumer("persist", ("message.sent",)) for _ in range(2)]
    await wait_until_split(members, bus.partitions)

    keys = [f"conv{k}" for k in range(16)]
    per_key = 25

    async def conversation(key: str) -> None:
        for i in range(per_key):  # one publisher's sequence per key...
            await bus.publish("message.sent", key, f"{key}:{i}".encode())

    await asyncio.gather(*(conversation(k) for k in keys))  # ...keys interleaved

    got: list[list[Record]] = [[] for _ in members]
    end = time.monotonic() + 20
    while sum(len(g) for g in got) < len(keys) * per_key and time.monotonic() < end:
        batches = await asyncio.gather(*(m.poll(500, 0.1) for m in members))
        for index, batch in enumerate(batches):
            got[index] += batch
    assert sum(len(g) for g in got) == len(keys) * per_key
    assert all(got), "both members should get some of the partitions' records"

    partitions_of: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for index, mine in enumerate(got):
        for key in keys:
            values = [int(r.value.decode().split(":")[1]) for r in mine if r.key == key]
            if values:
                assert values == list(range(per_key)), (key, values)
                partitions_of[key] |= {(index, r.partition) for r in mine if r.key == key}
    # One conversation, one partition, one member.
    assert all(len(p) == 1 for p in partitions_of.values()), partitions_of
    assert len(partitions_of) == len(keys)
    assert len({p for ps in partitions_of.values() for p in ps}) > 2
    for member, mine in zip(members, got, strict=True):
        await member.commit(mine)
        assert await member.lag() == 0


async def test_publish_fails_fast_when_nothing_listens() -> None:
    bus = KafkaBus("kafka://127.0.0.1:1", publish_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await bus.publish("message.sent", "c", b"lost")
    assert time.monotonic() - started < 1.5
    with pytest.raises(Unavailable):  # and again: no state left behind by the failure
        await bus.start()
    consumer = bus.consumer("persist", ("message.sent",))
    started = time.monotonic()
    with pytest.raises(Unavailable):
        for _ in range(20):  # [] while the join is pending, then its failure
            assert await consumer.poll(10, 0.1) == []
    assert time.monotonic() - started < 2.5
    await consumer.rewind()
    await bus.close()


async def test_publish_and_poll_fail_fast_when_the_broker_hangs() -> None:
    """Something accepts connections and never answers: a broker stuck in GC or I/O."""
    held: list[asyncio.StreamWriter] = []

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        bus = KafkaBus(f"kafka://127.0.0.1:{port}", publish_timeout=1.0)
        consumer = bus.consumer("persist", ("message.sent",))
        started = time.monotonic()
        polled = await consumer.poll(10, 0.2)  # the join hangs; poll keeps its timeout
        assert polled == []
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        results = await asyncio.gather(
            *(bus.publish("message.sent", f"c{i}", b"x") for i in range(20)),
            return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, Unavailable) for r in results), results
        assert elapsed < 1.5, elapsed
        assert len(held) >= 1  # it really did reach the hung "broker"
        await consumer.rewind()
        await consumer.close()
        await bus.close()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@needs_broker
async def test_a_new_group_gets_its_first_records_quickly(new_bus: BusFactory) -> None:
    """Joining a group (FindCoordinator, JoinGroup, SyncGroup, OffsetFetch) takes well under
    the contract suite's 2.5 s drain: the broker runs group.initial.rebalance.delay.ms=0."""
    bus = new_bus()
    await bus.publish("message.sent", "c", b"first")
    consumer = new_bus().consumer(f"fresh-{os.getpid()}", ("message.sent",))
    started = time.monotonic()
    got = await drain(consumer, 1, 10)
    took = time.monotonic() - started
    assert [r.value for r in got] == [b"first"]
    assert took < 2.0, took
