"""Registry on Redis: replicas' heartbeats and per-replica presence counts.

Keys (``prefix`` e.g. ``chat:``; app ids are generated and contain no ``:``):

    {prefix}replicas                   hash  replica_id -> msgpack ReplicaInfo
    {prefix}presence:<app>:<user>      hash  replica_id -> connection count (> 0)
    {prefix}last_seen:<app>            hash  user -> RFC 3339 time the last connection closed
    {prefix}replica_presence:<id>      set   presence keys holding a count of that replica
    {prefix}announced:<app>:<user>     hash  at, online: the last presence event (TTL 1 day)

Guarantees (the port's): a replica is live while its heartbeat is younger than the reader's
``max_age``, read from the heartbeat itself, so a dead replica stops counting without any
cleanup; a user is online while a live replica counts a connection. Everything here is
rebuilt by the replicas within one heartbeat and one connection change, so it needs no
durability: after a flush replicas reappear at their next heartbeat (every few seconds),
and users count as offline until they next connect or disconnect (``last_seen`` is lost).

Each call is one round trip (``remove``: two): writes go in one MULTI/EXEC, ``presence``
reads the replicas and every user's counts in one pipeline, and ``claim_announcement`` is one
Lua script, so two replicas asking at once get one "announce now" between them.
"""

from __future__ import annotations

import time

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis

from chatcluster.ports.registry import PresenceInfo, ReplicaInfo

# Compare and record the last announcement atomically. Floats travel as strings: a Lua number
# in a script's reply would be truncated to an integer.
_CLAIM = """
local a = redis.call('HMGET', KEYS[1], 'at', 'online')
if a[1] then
  if a[2] == ARGV[1] then return '-1' end
  local wait = tonumber(a[1]) + tonumber(ARGV[3]) - tonumber(ARGV[2])
  if wait > 0 then return tostring(wait) end
end
redis.call('HSET', KEYS[1], 'at', ARGV[2], 'online', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return '0'
"""
# An announcement record only matters for ``min_interval`` (5 s) and to skip repeating the
# state last announced; after a day without presence changes, repeating it once is harmless,
# and the TTL keeps users who never return from holding memory.
ANNOUNCED_TTL_MS = 24 * 3600 * 1000

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(ReplicaInfo)


class RedisRegistry:
    def __init__(self, url: str, prefix: str = "chat:", max_connections: int = 64) -> None:
        # Blocking: a burst waits for a connection instead of failing with
        # MaxConnectionsError (redis-py 8.1's default pool, past 100 connections).
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(url, max_connections=max_connections))
        self.prefix = prefix
        self._replicas = f"{prefix}replicas"
        self._claim = self.redis.register_script(_CLAIM)

    def _presence_key(self, app_id: str, user_id: str) -> str:
        return f"{self.prefix}presence:{app_id}:{user_id}"

    def _replica_presence_key(self, replica_id: str) -> str:
        return f"{self.prefix}replica_presence:{replica_id}"

    async def heartbeat(self, replica: ReplicaInfo) -> None:
        await self.redis.hset(self._replicas, replica.replica_id, _enc.encode(replica))

    async def remove(self, replica_id: str) -> None:
        index = self._replica_presence_key(replica_id)
        keys = await self.redis.smembers(index)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._replicas, replica_id)
            for key in keys:
                pipe.hdel(key, replica_id)
            pipe.delete(index)
            await pipe.execute()

    async def live_replicas(self, max_age: float) -> list[ReplicaInfo]:
        cutoff = time.time() - max_age
        bodies = (await self.redis.hgetall(self._replicas)).values()
        found = [_dec.decode(body) for body in bodies if isinstance(body, bytes)]
        return sorted((r for r in found if r.heartbeat_at >= cutoff), key=lambda r: r.replica_id)

    async def set_connections(self, app_id: str, user_id: str, replica_id: str,
                              connections: int, now: str) -> None:
        key = self._presence_key(app_id, user_id)
        index = self._replica_presence_key(replica_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            if connections > 0:
                pipe.hset(key, replica_id, connections)
                pipe.sadd(index, key)
            else:
                pipe.hdel(key, replica_id)
                pipe.srem(index, key)
                pipe.hset(f"{self.prefix}last_seen:{app_id}", user_id, now)
            await pipe.execute()

    async def presence(self, app_id: str, user_ids: list[str],
                       max_age: float) -> dict[str, PresenceInfo]:
        if not user_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._replicas)
            pipe.hmget(f"{self.prefix}last_seen:{app_id}", user_ids)
            for user in user_ids:
                pipe.hgetall(self._presence_key(app_id, user))
            replicas, seen, *counts = await pipe.execute()
        cutoff = time.time() - max_age
        live = {rid for rid, body in replicas.items() if _dec.decode(body).heartbeat_at >= cutoff}
        found = {}
        for user, last, per_replica in zip(user_ids, seen, counts, strict=True):
            online = any(rid in live and int(n) > 0 for rid, n in per_replica.items())
            found[user] = PresenceInfo(online=online, last_seen=None if online or last is None
                                       else last.decode())
        return found

    async def connections_by_app(self, max_age: float) -> dict[str, int]:
        """Each live replica's index names its presence keys; one pipeline reads its count in
        each. O(online users): meant for a sample every few seconds, not a hot path."""
        cutoff = time.time() - max_age
        live = [r.replica_id for r in await self.live_replicas(max_age)
                if r.heartbeat_at >= cutoff]
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in live:
                pipe.smembers(self._replica_presence_key(rid))
            indexes = await pipe.execute()
        pairs = [(rid, key) for rid, keys in zip(live, indexes, strict=True) for key in keys]
        if not pairs:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid, key in pairs:
                pipe.hget(key, rid)
            counts = await pipe.execute()
        found: dict[str, int] = {}
        start = len(f"{self.prefix}presence:")
        for (_, key), n in zip(pairs, counts, strict=True):
            if n is not None and int(n) > 0:
                app = key.decode()[start:].split(":", 1)[0]
                found[app] = found.get(app, 0) + int(n)
        return found

    async def claim_announcement(self, app_id: str, user_id: str, online: bool, now: float,
                                 min_interval: float) -> float:
        verdict = await self._claim(
            keys=[f"{self.prefix}announced:{app_id}:{user_id}"],
            args=[int(online), repr(now), repr(min_interval), ANNOUNCED_TTL_MS])
        return float(verdict)

    async def close(self) -> None:
        await self.redis.aclose()
