"""Fanout on Redis pub/sub: one channel, ``{prefix}fanout``, carrying msgpack ``Envelope``s.

Guarantees (the port's, which are Redis pub/sub's own):
- At most once: a subscriber receives what is published while its SUBSCRIBE is active;
  nothing is stored. A replica that is disconnected (or whose output buffer Redis drops for
  being too slow: ``client-output-buffer-limit pubsub``, 32 MB hard by default) misses those
  frames; clients recover with ``conversation.sync``.
- Ordered per publisher: Redis delivers one channel's messages in the order it executed
  the PUBLISHes, and one publisher awaits each publish before the next.

``subscribe()`` holds one connection per subscriber; it SUBSCRIBEs on its first iteration
and waits for Redis's confirmation before waiting for envelopes, so whatever is published
after that first ``anext()`` has started (and the confirmation has arrived) is received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chatcluster.ports.fanout import Envelope

# How long one wait for a message lasts: bounds how late a subscriber notices ``close``.
POLL_S = 0.5

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Envelope)


class RedisFanout:
    def __init__(self, url: str, prefix: str = "chat:", max_connections: int = 64) -> None:
        # Blocking: a burst waits for a connection instead of failing with
        # MaxConnectionsError (redis-py 8.1's default pool, past 100 connections).
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(url, max_connections=max_connections))
        self.channel = f"{prefix}fanout"
        self._closed = asyncio.Event()

    async def publish(self, envelope: Envelope) -> None:
        await self.redis.publish(self.channel, _enc.encode(envelope))

    async def subscribe(self) -> AsyncIterator[Envelope]:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while (await pubsub.get_message(timeout=POLL_S)) is None:  # the confirmation
                if self._closed.is_set():
                    return
            while not self._closed.is_set():
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=POLL_S)
                except RedisConnectionError:
                    if self._closed.is_set():
                        return  # close() disconnected us: a normal end
                    raise  # the caller resubscribes (socket.server's fan-out loop)
                if message is not None and message["type"] == "message":
                    yield _dec.decode(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1

    async def close(self) -> None:
        self._closed.set()
        await self.redis.aclose()
