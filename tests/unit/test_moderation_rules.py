"""The moderation rules (domain.moderation) and the replica's gate over them
(socket.moderation): what each state refuses, when a ban ends, how the cache learns."""

from __future__ import annotations

from typing import Any

import pytest

from chatcluster.domain.errors import Forbidden, Unavailable
from chatcluster.domain.moderation import (
    BANNED,
    FROZEN,
    MUTED,
    Ban,
    Restrictions,
    ban_active,
    check_action,
    retention_cutoff,
)
from chatcluster.ports.fanout import Envelope
from chatcluster.ports.moderation import ConversationModeration
from chatcluster.socket.moderation import ModerationGate

WRITES = ("send", "edit", "react", "manage")


def refused(restrictions: Restrictions, action: Any) -> str | None:
    try:
        check_action(restrictions, action)
    except Forbidden as exc:
        assert exc.code == "forbidden"
        return exc.message
    return None


def test_nothing_is_refused_without_restrictions() -> None:
    for action in (*WRITES, "delete", "leave", "read"):
        assert refused(Restrictions(), action) is None


def test_a_muted_member_may_not_send_edit_or_react_but_may_manage_delete_and_leave() -> None:
    muted = Restrictions(muted=True)
    for action in ("send", "edit", "react"):
        assert refused(muted, action) == MUTED
    for action in ("manage", "delete", "leave", "read"):
        assert refused(muted, action) is None


def test_a_frozen_conversation_refuses_every_write_but_delete_and_leave() -> None:
    frozen = Restrictions(frozen=True, muted=True)
    for action in WRITES:
        assert refused(frozen, action) == FROZEN  # frozen says more than muted
    for action in ("delete", "leave", "read"):
        assert refused(frozen, action) is None


def test_a_banned_user_may_not_write_even_a_delete() -> None:
    banned = Restrictions(banned=True, frozen=True)
    for action in (*WRITES, "delete"):
        assert refused(banned, action) == BANNED
    assert refused(banned, "leave") is None


def test_messages_name_the_state_first() -> None:
    assert BANNED.startswith("banned:") and MUTED.startswith("muted:")
    assert FROZEN.startswith("frozen:")


def test_a_ban_holds_until_it_expires() -> None:
    forever = Ban(app_id="a", user_id="u", by="adm", at="2026-01-01T00:00:00.000Z")
    brief = Ban(app_id="a", user_id="u", by="adm", at="2026-01-01T00:00:00.000Z",
                expires_at="2026-01-01T00:10:00.000Z")
    assert ban_active(forever, "2099-01-01T00:00:00.000Z")
    assert ban_active(brief, "2026-01-01T00:09:59.999Z")
    assert not ban_active(brief, "2026-01-01T00:10:00.000Z")
    assert not ban_active(None, "2026-01-01T00:00:00.000Z")


def test_retention_cutoff() -> None:
    assert retention_cutoff(1_000_000.0, 2) == 1_000_000.0 - 2 * 86_400
    assert retention_cutoff(100.0, 3, day_seconds=1) == 97.0
    with pytest.raises(ValueError):
        retention_cutoff(100.0, 0)


class FakeStore:
    def __init__(self) -> None:
        self.bans: dict[tuple[str, str], Ban] = {}
        self.frozen: set[str] = set()
        self.muted: dict[str, list[str]] = {}
        self.reads = 0

    async def get_ban(self, app_id: str, user_id: str) -> Ban | None:
        self.reads += 1
        return self.bans.get((app_id, user_id))

    async def conversation_moderation(self, conversation_id: str) -> ConversationModeration:
        self.reads += 1
        return ConversationModeration(conversation_id=conversation_id,
                                      frozen=conversation_id in self.frozen,
                                      muted=self.muted.get(conversation_id, []))


class FakeConn:
    def __init__(self) -> None:
        self.closed: int | None = None


class FakeDelivery:
    def __init__(self) -> None:
        self.conns = {("app", "bad"): {FakeConn()}}

    def connections_of(self, app_id: str, user_id: str) -> set[FakeConn]:
        return self.conns.get((app_id, user_id), set())

    def close(self, conn: FakeConn, code: int, reason: str) -> None:
        conn.closed = code


async def test_the_gate_caches_and_forgets_on_an_envelope() -> None:
    store, delivery = FakeStore(), FakeDelivery()
    gate = ModerationGate(store, delivery)  # type: ignore[arg-type]
    await gate.check("app", "amy", "c1", "send")
    await gate.check("app", "amy", "c1", "send")
    assert store.reads == 2  # one ban read, one conversation read: then cached
    store.muted["c1"] = ["amy"]
    await gate.check("app", "amy", "c1", "send")  # still cached: allowed
    gate.on_envelope(Envelope(kind="moderation", event="conversation.moderated", app_id="app",
                              conversation_id="c1"))
    with pytest.raises(Forbidden, match=r"^muted"):
        await gate.check("app", "amy", "c1", "send")
    await gate.check("app", "amy", "c1", "leave")  # never refused, never read
    store.bans[("app", "bad")] = Ban(app_id="app", user_id="bad", by="a",
                                     at="2026-01-01T00:00:00.000Z")
    assert not await gate.banned("app", "other")
    gate.on_envelope(Envelope(kind="moderation", event="user.banned", app_id="app",
                              recipients=["bad"]))
    assert [c.closed for c in delivery.conns[("app", "bad")]] == [4003]
    assert await gate.banned("app", "bad")
    with pytest.raises(Forbidden, match=r"^banned"):
        await gate.check("app", "bad", "c2", "delete")


class FailingStore(FakeStore):
    async def get_ban(self, app_id: str, user_id: str) -> Ban | None:
        raise Unavailable("store unreachable")

    async def conversation_moderation(self, conversation_id: str) -> ConversationModeration:
        raise Unavailable("store unreachable")


async def test_the_gate_lets_messaging_through_a_store_outage() -> None:
    gate = ModerationGate(FailingStore(), FakeDelivery())  # type: ignore[arg-type]
    await gate.check("app", "amy", "c1", "send")  # nothing known: nothing refused
    assert not await gate.banned("app", "amy")
