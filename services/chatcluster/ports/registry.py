"""Registry: the live socket replicas, and who is online on them.

Guarantees:
- A replica is live while its last heartbeat is younger than the ``max_age`` a reader asks
  for; a replica that died stops counting once that age passes, with no cleanup needed.
- Presence counts connections per (app, user, replica); a user is online while any live
  replica counts one. ``last_seen`` is when the last connection closed.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class ReplicaInfo(msgspec.Struct, frozen=True):
    replica_id: str
    url: str
    connections: int
    heartbeat_at: float
    draining: bool = False


class PresenceInfo(msgspec.Struct, frozen=True):
    online: bool
    last_seen: str | None


class Registry(Protocol):
    async def heartbeat(self, replica: ReplicaInfo) -> None: ...

    async def remove(self, replica_id: str) -> None: ...

    async def live_replicas(self, max_age: float) -> list[ReplicaInfo]: ...

    async def set_connections(
        self, app_id: str, user_id: str, replica_id: str, connections: int, now: str
    ) -> None:
        """Record the user's connection count on a replica (0 also records ``last_seen``)."""
        ...

    async def presence(
        self, app_id: str, user_ids: list[str], max_age: float
    ) -> dict[str, PresenceInfo]: ...

    async def connections_by_app(self, max_age: float) -> dict[str, int]:
        """Open connections per app on the live replicas (apps with none are left out): what
        the usage consumer samples for each day's peak."""
        ...

    async def claim_announcement(self, app_id: str, user_id: str, online: bool, now: float,
                                 min_interval: float) -> float:
        """Arbitrate presence events between replicas, atomically.

        Returns 0.0 when the caller should announce ``online`` now (it is recorded as the last
        announcement); -1.0 when ``online`` is what was last announced (nothing to say); else
        the seconds until ``min_interval`` has passed since the last announcement (ask again
        then). So a user's presence is announced at most once per ``min_interval``, whichever
        replicas their connections are on.
        """
        ...

    async def close(self) -> None: ...
