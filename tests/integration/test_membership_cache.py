"""On the production backends, membership is shared between replicas through Redis."""

from __future__ import annotations

import msgspec
import pytest
from redis.asyncio import Redis

from chatcluster.domain.model import ConversationState
from tests.chatclient import Cluster, group


async def cached(cluster: Cluster, conversation_id: str) -> ConversationState | None:
    namespace = cluster.env["CHAT_NAMESPACE"]
    async with Redis.from_url(cluster.env["CHAT_CACHE_URL"]) as redis:
        blob = await redis.hget(f"chat:{namespace}:members:{conversation_id}", "s")
    return None if blob is None else msgspec.msgpack.decode(blob, type=ConversationState)


async def test_membership_changes_reach_the_shared_cache(cluster, connect, users) -> None:
    if not cluster.env.get("CHAT_CACHE_URL"):
        pytest.skip("the embedded backends have no shared tier: the store is a local file")
    alice, bob, carol = users("alice", "bob", "carol")
    a = await connect(alice)
    cid = await group(a, bob)
    first = await cached(cluster, cid)
    assert first is not None and first.members == [alice, bob]
    await a.ok("conversation.add_members", {"conversation_id": cid, "members": [carol]})
    second = await cached(cluster, cid)
    assert second is not None and second.members == [alice, bob, carol]
    assert second.version > first.version
    # Flushed (or expired): sends still work (a miss reads the store), and the next change
    # puts its version back.
    namespace = cluster.env["CHAT_NAMESPACE"]
    async with Redis.from_url(cluster.env["CHAT_CACHE_URL"]) as redis:
        await redis.delete(f"chat:{namespace}:members:{cid}")
    c = await connect(carol, replica=1)
    await c.ok("message.send", {"conversation_id": cid, "text": "hi", "client_msg_id": "m1"})
    await a.ok("conversation.update", {"conversation_id": cid, "title": "renamed"})
    third = await cached(cluster, cid)
    assert third is not None and third.title == "renamed" and third.version > second.version
