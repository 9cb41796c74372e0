"""Registry contract: live replicas by heartbeat age; presence across replicas."""

from __future__ import annotations

import time

from chatcluster.ports.registry import Registry, ReplicaInfo


async def test_a_replica_is_live_while_its_heartbeat_is_fresh(registry_backend) -> None:
    reg: Registry = (await registry_backend.open())
    now = time.time()
    await reg.heartbeat(ReplicaInfo("r1", "ws://a", 3, now))
    await reg.heartbeat(ReplicaInfo("r2", "ws://b", 1, now - 10))  # died 10 s ago
    live = await (await registry_backend.open()).live_replicas(max_age=3)
    assert [r.replica_id for r in live] == ["r1"]
    assert live[0].url == "ws://a" and live[0].connections == 3
    await reg.heartbeat(ReplicaInfo("r1", "ws://a", 5, time.time(), draining=True))
    (again,) = await reg.live_replicas(max_age=3)
    assert again.draining is True and again.connections == 5
    await reg.remove("r1")
    assert await reg.live_replicas(max_age=3) == []


async def test_presence_counts_connections_on_live_replicas(registry_backend) -> None:
    reg: Registry = (await registry_backend.open())
    await reg.heartbeat(ReplicaInfo("r1", "ws://a", 1, time.time()))
    await reg.heartbeat(ReplicaInfo("dead", "ws://d", 1, time.time() - 60))
    await reg.set_connections("app", "alice", "r1", 2, "2026-01-01T00:00:00.000Z")
    await reg.set_connections("app", "bob", "dead", 1, "2026-01-01T00:00:00.000Z")
    found = await reg.presence("app", ["alice", "bob", "carol"], max_age=3)
    assert found["alice"].online is True and found["alice"].last_seen is None
    assert found["bob"].online is False, "a dead replica's connections do not count"
    assert found["carol"].online is False and found["carol"].last_seen is None
    await reg.set_connections("app", "alice", "r1", 0, "2026-01-01T00:00:09.000Z")
    gone = (await reg.presence("app", ["alice"], max_age=3))["alice"]
    assert gone.online is False and gone.last_seen == "2026-01-01T00:00:09.000Z"
    assert await reg.presence("other-app", ["alice"], max_age=3) == {
        "alice": type(gone)(online=False, last_seen=None)}


async def test_one_presence_announcement_per_interval_across_replicas(registry_backend) -> None:
    replicas: list[Registry] = [await registry_backend.open(), await registry_backend.open()]
    now = 1_000.0
    verdicts = [await r.claim_announcement("app", "alice", True, now, 5.0) for r in replicas]
    assert verdicts == [0.0, -1.0], "one replica speaks; the other has nothing to say"
    too_soon = await replicas[1].claim_announcement("app", "alice", False, now + 1, 5.0)
    assert too_soon == 4.0, "the other state may be told once the interval has passed"
    assert await replicas[0].claim_announcement("app", "alice", False, now + 5, 5.0) == 0.0
    assert await replicas[1].claim_announcement("app", "alice", False, now + 9, 5.0) == -1.0
    assert await replicas[1].claim_announcement("app", "bob", False, now, 5.0) == 0.0
