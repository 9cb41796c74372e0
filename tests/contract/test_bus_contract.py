"""Bus contract: durable publish, per-key order, at-least-once groups with commit/rewind."""

from __future__ import annotations

from chatcluster.ports.bus import Bus, BusConsumer


async def drain(consumer: BusConsumer, expect: int, rounds: int = 50) -> list:
    out: list = []
    for _ in range(rounds):
        out += await consumer.poll(100, 0.05)
        if len(out) >= expect:
            break
    return out


async def test_records_come_back_in_publishing_order_per_key(bus_backend) -> None:
    bus: Bus = (await bus_backend.open())
    for i in range(30):
        await bus.publish("message.sent", f"c{i % 3}", f"{i}".encode())
    got = await drain(bus.consumer("g", ("message.sent",)), 30)
    assert len(got) == 30
    for key in ("c0", "c1", "c2"):
        values = [int(r.value) for r in got if r.key == key]
        assert values == sorted(values)
    assert {r.topic for r in got} == {"message.sent"}


async def test_a_group_resumes_after_its_last_commit(bus_backend) -> None:
    bus: Bus = (await bus_backend.open())
    for i in range(10):
        await bus.publish("message.sent", "c", str(i).encode())
    first = bus.consumer("persist", ("message.sent",))
    batch = await drain(first, 10)
    await first.commit(batch[:4])
    await first.close()
    # A new consumer of the group (a restarted process) starts after the commit.
    second = (await bus_backend.open()).consumer("persist", ("message.sent",))
    rest = await drain(second, 6)
    assert [int(r.value) for r in rest] == list(range(4, 10))
    assert await second.lag() == 6
    await second.commit(rest)
    assert await second.lag() == 0


async def test_rewind_hands_uncommitted_records_out_again(bus_backend) -> None:
    bus: Bus = (await bus_backend.open())
    for i in range(5):
        await bus.publish("message.edited", "c", str(i).encode())
    consumer = bus.consumer("g", ("message.edited",))
    seen = await drain(consumer, 5)
    await consumer.commit(seen[:2])
    await consumer.rewind()
    again = await drain(consumer, 3)
    assert [int(r.value) for r in again] == [2, 3, 4]


async def test_groups_are_independent_and_topics_filter(bus_backend) -> None:
    bus: Bus = (await bus_backend.open())
    await bus.publish("message.sent", "c", b"s")
    await bus.publish("message.delivered", "c", b"d")
    persist = await drain(bus.consumer("persist", ("message.sent",)), 1)
    acks = await drain(bus.consumer("acks", ("message.delivered",)), 1)
    assert [r.value for r in persist] == [b"s"]
    assert [r.value for r in acks] == [b"d"]


async def test_published_records_outlive_the_publisher(bus_backend) -> None:
    bus: Bus = (await bus_backend.open())
    await bus.publish("conversation.updated", "c", b"kept")
    await bus.close()
    got = await drain((await bus_backend.open()).consumer("g", ("conversation.updated",)), 1)
    assert [r.value for r in got] == [b"kept"]
