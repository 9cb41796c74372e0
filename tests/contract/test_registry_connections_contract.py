"""Registry.connections_by_app over every adapter: what the usage consumer samples."""

from __future__ import annotations

import time

from chatcluster.ports.registry import ReplicaInfo
from tests.contract.conftest import Backend

NOW = "2026-01-01T00:00:00.000Z"


async def test_connections_are_summed_per_app_on_live_replicas(registry_backend: Backend
                                                               ) -> None:
    registry = await registry_backend.open()
    assert await registry.connections_by_app(3.0) == {}
    await registry.heartbeat(ReplicaInfo("r1", "ws://a", 3, time.time()))
    await registry.heartbeat(ReplicaInfo("r2", "ws://b", 2, time.time()))
    await registry.heartbeat(ReplicaInfo("dead", "ws://c", 1, time.time() - 60))
    await registry.set_connections("app_a", "alice", "r1", 2, NOW)
    await registry.set_connections("app_a", "alice", "r2", 1, NOW)
    await registry.set_connections("app_a", "bob", "r2", 1, NOW)
    await registry.set_connections("app_b", "carol", "r1", 1, NOW)
    await registry.set_connections("app_b", "dave", "dead", 5, NOW)  # a dead replica's
    await registry.set_connections("app_c", "erin", "r1", 1, NOW)
    await registry.set_connections("app_c", "erin", "r1", 0, NOW)  # closed again
    other = await registry_backend.open()
    assert await other.connections_by_app(3.0) == {"app_a": 4, "app_b": 1}
