"""MembershipCache on Redis: one hash per conversation, replaced only by a newer version.

Keys (``prefix`` e.g. ``chat:``)::

    {prefix}members:<conversation_id>   hash  v -> version, s -> msgpack ConversationState

``put`` is one Lua script (compare the version, write, set the TTL), so two replicas putting
different versions at once leave the newer one. Entries expire after ``ttl_s`` (30 s by
default): writers keep them current, the TTL only bounds how long an entry outlives a writer
that died between its Store write and its ``put`` while a reader was refilling the entry
(see the port). A flush only costs Store reads.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis

from chatcluster.domain.model import ConversationState

_PUT = """
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
DEFAULT_TTL_S = 30.0

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(ConversationState)


class RedisMembershipCache:
    def __init__(self, url: str, prefix: str = "chat:", ttl_s: float = DEFAULT_TTL_S,
                 max_connections: int = 64) -> None:
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(url, max_connections=max_connections))
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self._put = self.redis.register_script(_PUT)

    def _key(self, conversation_id: str) -> str:
        return f"{self.prefix}members:{conversation_id}"

    async def get(self, conversation_id: str) -> ConversationState | None:
        blob = await self.redis.hget(self._key(conversation_id), "s")
        return _dec.decode(blob) if isinstance(blob, bytes) else None

    async def put(self, state: ConversationState) -> None:
        await self._put(keys=[self._key(state.id)],
                        args=[state.version, _enc.encode(state), self.ttl_ms])

    async def forget(self, conversation_id: str) -> None:
        await self.redis.delete(self._key(conversation_id))

    async def close(self) -> None:
        await self.redis.aclose()
