"""What a replica knows of bans, mutes and frozen conversations, and how fast it learns.

Reads go to the ModerationStore and are cached for ``CACHE_TTL_S``. The gateway announces every
change with a ``moderation`` envelope on the Fanout; on one, the replica drops its cache (and,
for a ban, closes the user's sockets here with 4003). An envelope lost by the best-effort
fan-out costs at most the TTL for mutes and freezes, and ``BAN_POLL_S`` for the sockets of a
banned user (``run`` polls recent bans): the propagation bound stated in docs/moderation.md.
"""

from __future__ import annotations

import asyncio
import logging
import time

from chatcluster.domain import moderation as rules
from chatcluster.domain.ids import now_rfc3339, rfc3339
from chatcluster.domain.moderation import Action, Restrictions
from chatcluster.ports.fanout import Envelope
from chatcluster.ports.moderation import ModerationStore
from chatcluster.protocol.errors import CLOSE_USER_BANNED
from chatcluster.socket.delivery import LocalDelivery

log = logging.getLogger(__name__)

# What a replica read is kept this long. It stays right because every change bumps the store's
# moderation version, polled every POLL_S: a changed version drops the whole cache. So a mute
# or freeze whose envelope was lost still holds everywhere within ~POLL_S, and the send path
# reads the store once per user and per conversation per minute, not per send.
CACHE_TTL_S = 60.0
# The version and recent bans are polled this often: the sockets of a banned user close
# within ~1 s even if the envelope was lost (the same period as the session revocation poll).
BAN_POLL_S = 1.0
ENVELOPE_KIND = "moderation"
MAX_CACHED = 100_000
# A read slower than this, or failing, falls back to the expired copy, else to "no
# restriction": moderation must not take messaging down with the store (sends otherwise keep
# flowing through a store outage, see docs/architecture.md). Bans still close sockets.
READ_DEADLINE_S = 1.0


class ModerationGate:
    def __init__(self, store: ModerationStore, delivery: LocalDelivery) -> None:
        self.store = store
        self.delivery = delivery
        self._bans: dict[tuple[str, str], tuple[float, bool]] = {}
        self._conversations: dict[str, tuple[float, bool, frozenset[str]]] = {}
        self._version: int | None = None
        # Bumped whenever cached state may be stale: a read that started before is not kept.
        self._generation = 0

    async def banned(self, app_id: str, user_id: str) -> bool:
        key = (app_id, user_id)
        hit = self._bans.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        generation = self._generation
        try:
            ban = await asyncio.wait_for(self.store.get_ban(app_id, user_id), READ_DEADLINE_S)
        except Exception as exc:
            log.warning("ban read failed; using what is known",
                        extra={"fields": {"error": repr(exc)}})
            return hit[1] if hit is not None else False
        active = rules.ban_active(ban, now_rfc3339())
        if len(self._bans) > MAX_CACHED:
            self._bans.clear()
        if generation == self._generation:
            self._bans[key] = (time.monotonic() + CACHE_TTL_S, active)
        return active

    async def _conversation(self, conversation_id: str) -> tuple[bool, frozenset[str]]:
        hit = self._conversations.get(conversation_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], hit[2]
        generation = self._generation
        try:
            found = await asyncio.wait_for(self.store.conversation_moderation(conversation_id),
                                           READ_DEADLINE_S)
        except Exception as exc:
            log.warning("moderation read failed; using what is known",
                        extra={"fields": {"error": repr(exc)}})
            return (hit[1], hit[2]) if hit is not None else (False, frozenset())
        if len(self._conversations) > MAX_CACHED:
            self._conversations.clear()
        muted = frozenset(found.muted)
        if generation == self._generation:
            self._conversations[conversation_id] = (time.monotonic() + CACHE_TTL_S,
                                                    found.frozen, muted)
        return found.frozen, muted

    async def check(self, app_id: str, user_id: str, conversation_id: str,
                    action: Action) -> None:
        """Raise ``Forbidden`` if a ban, a mute or a freeze refuses ``action``."""
        if action in ("read", "leave"):
            return
        frozen, muted = await self._conversation(conversation_id)
        rules.check_action(Restrictions(banned=await self.banned(app_id, user_id),
                                        muted=user_id in muted, frozen=frozen), action)

    def on_envelope(self, env: Envelope) -> None:
        """A change announced by the gateway: forget what it changed; close a banned user."""
        self._generation += 1
        if env.conversation_id is not None:
            self._conversations.pop(env.conversation_id, None)
        for user in env.recipients:
            self._bans.pop((env.app_id, user), None)
            if env.event == "user.banned":
                self.close_user(env.app_id, user)

    def close_user(self, app_id: str, user_id: str) -> None:
        for conn in list(self.delivery.connections_of(app_id, user_id)):
            self.delivery.close(conn, CLOSE_USER_BANNED, "user banned")

    async def run(self) -> None:
        """Back up the envelopes: close the sockets of users banned in the last seconds."""
        while True:
            await asyncio.sleep(BAN_POLL_S)
            try:
                version = await self.store.version()
                if version != self._version:  # something changed: read it again when needed
                    self._generation += 1
                    self._bans.clear()
                    self._conversations.clear()
                    self._version = version
                now = now_rfc3339()
                for ban in await self.store.bans_since(rfc3339(time.time() - 10 * BAN_POLL_S)):
                    if rules.ban_active(ban, now) and self.delivery.connections_of(
                            ban.app_id, ban.user_id):
                        self._bans[(ban.app_id, ban.user_id)] = (
                            time.monotonic() + CACHE_TTL_S, True)
                        self.close_user(ban.app_id, ban.user_id)
            except Exception:
                log.exception("ban poll failed")
