"""MembershipCache: conversation states shared by every socket replica, in front of the Store.

Each replica keeps its own short-lived copy (``socket.operations``); this is the tier behind
it, so a replica whose copy expired, or a replica that just started, reads membership from
the cache instead of the Store (on the production backends: Redis instead of MongoDB).

Guarantees:
- ``get`` returns ``None`` or a state that was ``put``; after ``put(s)`` no state older than
  ``s.version`` is returned for that conversation while the entry lives (a late ``put`` of an
  older version changes nothing), and ``forget`` removes it.
- It may forget anything at any time (eviction, TTL, a flush): it holds nothing that cannot be
  read again from the Store, so callers treat a miss as "ask the Store".
- Writers ``forget`` before saving a new version and ``put`` it after, so a writer that dies
  between the two leaves a miss, not a stale entry.
"""

from __future__ import annotations

from typing import Protocol

from chatcluster.domain.model import ConversationState


class MembershipCache(Protocol):
    async def get(self, conversation_id: str) -> ConversationState | None: ...

    async def put(self, state: ConversationState) -> None:
        """Cache ``state`` unless a newer version is cached (atomically)."""
        ...

    async def forget(self, conversation_id: str) -> None: ...

    async def close(self) -> None: ...
