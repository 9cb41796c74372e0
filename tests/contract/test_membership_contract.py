"""MembershipCache contract: shared between instances, never goes back a version, may miss."""

from __future__ import annotations

import asyncio

from chatcluster.domain.model import ConversationState
from chatcluster.ports.membership import MembershipCache


def state(version: int, members: list[str], conversation_id: str = "c1") -> ConversationState:
    return ConversationState(id=conversation_id, app_id="app", type="group", title="t",
                             members=members, owner=members[0], admins=[],
                             created_at="2026-01-01T00:00:00.000Z", version=version)


async def test_a_put_is_seen_by_every_instance(membership_backend) -> None:
    one: MembershipCache = await membership_backend.open()
    two: MembershipCache = await membership_backend.open()
    assert await two.get("c1") is None
    await one.put(state(3, ["alice", "bob"]))
    assert await two.get("c1") == state(3, ["alice", "bob"])
    assert await two.get("c2") is None


async def test_an_older_version_never_replaces_a_newer_one(membership_backend) -> None:
    cache: MembershipCache = await membership_backend.open()
    await cache.put(state(7, ["alice", "bob", "carol"]))
    await cache.put(state(5, ["alice"]))  # a late refill from a reader that read before
    assert (await cache.get("c1")) == state(7, ["alice", "bob", "carol"])
    await cache.put(state(8, ["alice", "bob"]))
    assert (await cache.get("c1")) == state(8, ["alice", "bob"])


async def test_concurrent_puts_leave_the_newest(membership_backend) -> None:
    caches = [await membership_backend.open() for _ in range(3)]
    versions = list(range(1, 61))
    await asyncio.gather(*(caches[v % 3].put(state(v, [f"u{v}"])) for v in reversed(versions)))
    found = await caches[0].get("c1")
    assert found is not None and found.version == 60 and found.members == ["u60"]


async def test_forget_removes_and_a_new_put_is_accepted_again(membership_backend) -> None:
    cache: MembershipCache = await membership_backend.open()
    await cache.put(state(9, ["alice", "bob"]))
    await cache.forget("c1")
    assert await cache.get("c1") is None
    await cache.put(state(4, ["alice"], "c1"))  # after a forget, any version may refill
    assert (await cache.get("c1")) == state(4, ["alice"])


async def test_entries_expire(membership_backend) -> None:
    """The contract backends open it with a 1 s TTL: an entry outlives a dead writer only
    that long."""
    cache: MembershipCache = await membership_backend.open()
    await cache.put(state(1, ["alice"]))
    for _ in range(40):
        if await cache.get("c1") is None:
            break
        await asyncio.sleep(0.1)
    assert await cache.get("c1") is None

