"""Fanout contract: every subscriber gets what is published after it subscribed, in order."""

from __future__ import annotations

import asyncio

from chatcluster.ports.fanout import Envelope, Fanout


async def collect(fanout: Fanout, n: int, into: list[Envelope], ready: asyncio.Event) -> None:
    stream = fanout.subscribe()
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)  # subscribed: the iterator has started tailing
    ready.set()
    into.append(await first)
    while len(into) < n:
        into.append(await anext(stream))


async def test_every_replica_receives_each_envelope_in_publishing_order(fanout_backend) -> None:
    publisher: Fanout = (await fanout_backend.open())
    subscribers: list[Fanout] = [(await fanout_backend.open()), (await fanout_backend.open())]
    received: list[list[Envelope]] = [[], []]
    ready = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(collect(s, 20, received[i], ready[i]))
             for i, s in enumerate(subscribers)]
    await asyncio.gather(*(e.wait() for e in ready))
    sent = [Envelope(kind="event", origin="r1", app_id="a", recipients=["u"],
                     frame=f"{i}".encode(), conversation_id="c", event_seq=i)
            for i in range(20)]
    for env in sent:
        await publisher.publish(env)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert received[0] == sent and received[1] == sent


async def test_a_subscriber_does_not_get_what_was_published_before_it(fanout_backend) -> None:
    fanout: Fanout = (await fanout_backend.open())
    await fanout.publish(Envelope(kind="event", frame=b"old"))
    got: list[Envelope] = []
    ready = asyncio.Event()
    task = asyncio.create_task(collect((await fanout_backend.open()), 1, got, ready))
    await ready.wait()
    await fanout.publish(Envelope(kind="revoke", session_id="s1"))
    await asyncio.wait_for(task, 10)
    assert got == [Envelope(kind="revoke", session_id="s1")]
