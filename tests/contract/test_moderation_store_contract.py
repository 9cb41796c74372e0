"""ModerationStore contract, on every adapter: bans, mutes, freezes (idempotent, seen by a
second instance), devices, and its reads of the Store's users, sessions, messages and receipts
(written here through the Store of the same backend and namespace)."""

from __future__ import annotations

import itertools
from typing import Any

from chatcluster.domain import rules
from chatcluster.domain.model import App, Message, MessageState, Session
from chatcluster.domain.moderation import Ban, Flag, flag_id
from chatcluster.ports.moderation import ModerationStore, SessionDevice
from chatcluster.ports.store import ActivityMark, LoggedEvent, PipelineBatch, ReceiptMark, Store
from tests.contract.conftest import MODULES

T0 = "2026-01-01T00:00:00.000Z"


async def store_beside(backend: Any) -> Store:
    """The Store on the same data as the backend's ModerationStore."""
    instance = MODULES[backend.name].PORTS["store"](backend._namespace)
    backend._open.append(instance)
    return instance  # type: ignore[no-any-return]


def ban(user: str, at: str = T0, app: str = "app", **extra: Any) -> Ban:
    return Ban(app_id=app, user_id=user, by="adm_1", at=at, **extra)


async def test_bans_are_kept_listed_and_lifted(moderation_store_backend: Any) -> None:
    store: ModerationStore = await moderation_store_backend.open()
    other: ModerationStore = await moderation_store_backend.open()
    await store.set_ban(ban("bob", reason="spam"))
    await store.set_ban(ban("alice", at="2026-01-01T00:00:10.000Z",
                            expires_at="2026-01-02T00:00:00.000Z"))
    await store.set_ban(ban("bob", app="elsewhere"))
    found = await other.get_ban("app", "bob")
    assert found == ban("bob", reason="spam")
    assert await other.get_ban("app", "carol") is None
    assert [b.user_id for b in await other.list_bans("app", None, 10)] == ["alice", "bob"]
    assert [b.user_id for b in await other.list_bans("app", "alice", 10)] == ["bob"]
    assert [b.user_id for b in await other.list_bans("app", None, 1)] == ["alice"]
    recent = await other.bans_since("2026-01-01T00:00:05.000Z")
    assert [(b.app_id, b.user_id) for b in recent] == [("app", "alice")]
    await store.set_ban(ban("bob", reason="again"))  # new terms replace the old
    assert (await other.get_ban("app", "bob")).reason == "again"  # type: ignore[union-attr]
    assert await store.remove_ban("app", "bob") is True
    assert await store.remove_ban("app", "bob") is False
    assert await other.get_ban("app", "bob") is None
    assert await other.get_ban("elsewhere", "bob") is not None


async def test_mutes_and_freezes_are_idempotent(moderation_store_backend: Any) -> None:
    store: ModerationStore = await moderation_store_backend.open()
    other: ModerationStore = await moderation_store_backend.open()
    empty = await other.conversation_moderation("c1")
    assert (empty.frozen, empty.muted) == (False, [])
    assert await store.set_mute("app", "c1", "zed", True, "adm", T0) is True
    assert await store.set_mute("app", "c1", "zed", True, "adm", T0) is False
    assert await store.set_mute("app", "c1", "amy", True, "adm", T0) is True
    assert await store.set_mute("app", "c2", "bob", True, "adm", T0) is True
    assert await store.set_frozen("app", "c1", True, "adm_9", T0) is True
    assert await store.set_frozen("app", "c1", True, "adm_9", T0) is False
    state = await other.conversation_moderation("c1")
    assert state.frozen and state.frozen_by == "adm_9" and state.frozen_at == T0
    assert state.muted == ["amy", "zed"]
    assert await store.set_mute("app", "c1", "zed", False, "adm", T0) is True
    assert await store.set_mute("app", "c1", "zed", False, "adm", T0) is False
    assert await store.set_frozen("app", "c1", False, "adm", T0) is True
    state = await other.conversation_moderation("c1")
    assert (state.frozen, state.frozen_by, state.muted) == (False, None, ["amy"])
    assert (await other.conversation_moderation("c2")).muted == ["bob"]


async def test_every_change_moves_the_version_seen_by_every_instance(
        moderation_store_backend: Any) -> None:
    store: ModerationStore = await moderation_store_backend.open()
    other: ModerationStore = await moderation_store_backend.open()
    seen = [await other.version()]
    changes = [
        lambda: store.set_ban(ban("bob")),
        lambda: store.remove_ban("app", "bob"),
        lambda: store.set_mute("app", "c1", "zed", True, "adm", T0),
        lambda: store.set_mute("app", "c1", "zed", False, "adm", T0),
        lambda: store.set_frozen("app", "c1", True, "adm", T0),
        lambda: store.set_frozen("app", "c1", False, "adm", T0),
    ]
    for change in changes:
        await change()
        seen.append(await other.version())
    assert all(b > a for a, b in itertools.pairwise(seen)), seen
    await store.get_ban("app", "bob")
    await store.conversation_moderation("c1")
    assert await other.version() == seen[-1], "reads change nothing"


def flag(message: str, by: str, at: str, app: str = "app", **extra: Any) -> Flag:
    return Flag(id=flag_id(app, message, by), app_id=app, message_id=message,
                conversation_id="c1", sender_id="sam", flagged_by=by, reason="spam",
                created_at=at, **extra)


async def test_flags_are_queued_once_listed_oldest_first_and_resolved_per_message(
        moderation_store_backend: Any) -> None:
    store: ModerationStore = await moderation_store_backend.open()
    other: ModerationStore = await moderation_store_backend.open()
    first = flag("m1", "ann", "2026-01-01T00:00:01.000Z", note="rude")
    assert await store.add_flag(first) == first
    again = flag("m1", "ann", "2026-01-01T00:00:09.000Z", note="changed my mind")
    assert await other.add_flag(again) == first, "one flag per member and message"
    await store.add_flag(flag("m1", "bob", "2026-01-01T00:00:02.000Z"))
    await store.add_flag(flag("m2", "ann", "2026-01-01T00:00:02.000Z"))
    await store.add_flag(flag("m3", "cy", "2026-01-01T00:00:03.000Z"))
    await store.add_flag(flag("m1", "ann", "2026-01-01T00:00:01.000Z", app="elsewhere"))

    queue = await other.list_flags("app", "open", None, 10)
    assert [(f.message_id, f.flagged_by) for f in queue] == [
        ("m1", "ann"), *sorted([("m1", "bob"), ("m2", "ann")],
                               key=lambda p: flag_id("app", *p)), ("m3", "cy")]
    page = await other.list_flags("app", None, None, 2)
    rest = await other.list_flags("app", None, (page[-1].created_at, page[-1].id), 10)
    assert [f.id for f in page + rest] == [f.id for f in queue], "pages continue in order"
    assert await other.get_flag("app", first.id) == first
    assert await other.get_flag("elsewhere", flag_id("app", "m1", "ann")) is None

    assert await store.resolve_flags("app", "m1", "removed", "adm_1", T0) == 2
    assert await store.resolve_flags("app", "m1", "dismissed", "adm_1", T0) == 0, "closed"
    assert [f.message_id for f in await other.list_flags("app", "open", None, 10)] == [
        "m2", "m3"]
    removed = await other.list_flags("app", "removed", None, 10)
    assert {(f.flagged_by, f.status, f.resolved_by, f.resolved_at) for f in removed} == {
        ("ann", "removed", "adm_1", T0), ("bob", "removed", "adm_1", T0)}
    assert (await other.get_flag("elsewhere", flag_id("elsewhere", "m1", "ann"))).status == (
        "open"), "another app's flag of the same ids is its own"

    assert [f.message_id for f in await other.flags_by("app", "ann")] == ["m1", "m2"]
    await store.erase_profile("app", "ann")
    assert [f.note for f in await other.flags_by("app", "ann")] == [None, None]


async def test_users_sessions_and_devices(moderation_store_backend: Any) -> None:
    moderation: ModerationStore = await moderation_store_backend.open()
    store = await store_beside(moderation_store_backend)
    await store.create_app(App(id="app", name="n", secret_digest="d", created_at=T0))
    for user, name in (("ann", "Zoe"), ("anna", None), ("bob", "Annie"), ("b_x", "B"),
                       ("Anders", "x")):
        await store.ensure_user("app", user, name, T0)
    await store.ensure_user("other", "ann", "Elsewhere", T0)
    listed = await moderation.list_users("app", None, None, 10)
    assert [u.user_id for u in listed] == ["Anders", "ann", "anna", "b_x", "bob"]
    assert [u.user_id for u in await moderation.list_users("app", None, "anna", 2)] == [
        "b_x", "bob"]
    by_prefix = await moderation.list_users("app", "ann", None, 10)
    assert [u.user_id for u in by_prefix] == ["ann", "anna"]  # case-sensitive
    assert [u.user_id for u in await moderation.list_users("app", "Ann", None, 10)] == ["bob"]
    assert [u.user_id for u in await moderation.list_users("app", "b_", None, 10)] == ["b_x"]
    assert [u.user_id for u in await moderation.list_users("app", "a.", None, 10)] == []
    assert (await moderation.get_user("app", "ann")).display_name == "Zoe"  # type: ignore[union-attr]
    assert await moderation.get_user("app", "nobody") is None

    for sid, at in (("s1", T0), ("s2", "2026-01-01T00:00:09.000Z")):
        await store.create_session(Session(id=sid, app_id="app", user_id="ann",
                                           refresh_jti="j", created_at=at))
    await store.create_session(Session(id="s3", app_id="other", user_id="ann",
                                       refresh_jti="j", created_at=T0))
    await moderation.record_device(SessionDevice(session_id="s1", app_id="app", user_id="ann",
                                                 user_agent="phone", ip="10.0.0.1"))
    await moderation.record_device(SessionDevice(session_id="s1", app_id="app", user_id="ann",
                                                 last_refresh_at="2026-01-01T00:01:00.000Z"))
    await store.revoke_session("s2", "2026-01-01T00:00:10.000Z")
    sessions = await moderation.user_sessions("app", "ann")
    assert [s.id for s in sessions] == ["s2", "s1"]  # newest first
    assert sessions[0].revoked_at == "2026-01-01T00:00:10.000Z"
    assert (sessions[1].user_agent, sessions[1].ip, sessions[1].last_refresh_at) == (
        "phone", "10.0.0.1", "2026-01-01T00:01:00.000Z")
    assert sessions[0].user_agent is None

    await moderation.erase_profile("app", "ann")
    assert (await moderation.get_user("app", "ann")).display_name is None  # type: ignore[union-attr]
    assert (await moderation.get_user("other", "ann")).display_name == "Elsewhere"  # type: ignore[union-attr]
    device = (await moderation.user_sessions("app", "ann"))[1]
    assert (device.user_agent, device.ip) == (None, None)
    assert await store.display_names("app", ["ann"]) == {"ann": None}


def message(cid: str, seq: int, sender: str, at: str, app: str = "app") -> MessageState:
    m = Message(id=f"{cid}-m{seq:03d}", conversation_id=cid, seq=seq, sender_id=sender,
                text=f"t{seq}", client_msg_id=f"k{seq}", created_at=at)
    return MessageState(app_id=app, message=m, text_event_seq=seq, last_event_seq=seq)


async def test_messages_by_sender_by_age_and_receipts(moderation_store_backend: Any) -> None:
    moderation: ModerationStore = await moderation_store_backend.open()
    store = await store_beside(moderation_store_backend)
    for cid, app in (("c1", "app"), ("c2", "other")):
        await store.create_conversation(rules.new_conversation(
            conversation_id=cid, app_id=app, creator="ann", type="group", members=["bob"],
            title=None, now=T0, event_seq=1))
    states = [message("c1", 1, "ann", "2026-01-01T00:00:01.000Z"),
              message("c1", 2, "bob", "2026-01-01T00:00:02.000Z"),
              message("c1", 3, "ann", "2026-01-03T00:00:00.000Z"),
              message("c2", 1, "ann", "2026-01-01T00:00:01.000Z", app="other")]
    await store.write_pipeline_batch(PipelineBatch(
        new_messages=states,
        events=[LoggedEvent(s.message.conversation_id, s.last_event_seq, "message.new",
                            s.message.id) for s in states],
        activity=[ActivityMark("c1", 3, 3, states[2].message.created_at)],
        receipts=[ReceiptMark("c1", "ann", "read", 2), ReceiptMark("c1", "ann", "delivered", 3),
                  ReceiptMark("c2", "ann", "read", 1)]))
    mine = await moderation.messages_sent_by("app", "ann", None, 10)
    assert [s.message.id for s in mine] == ["c1-m001", "c1-m003"]
    assert [s.message.id for s in await moderation.messages_sent_by("app", "ann", "c1-m001",
                                                                   10)] == ["c1-m003"]
    assert [s.message.id for s in await moderation.messages_sent_by("app", "ann", None, 1)] == [
        "c1-m001"]
    old = await moderation.messages_created_before("app", "2026-01-02T00:00:00.000Z", 10)
    assert sorted(s.message.id for s in old) == ["c1-m001", "c1-m002"]
    assert len(await moderation.messages_created_before("app", "2026-01-02T00:00:00.000Z",
                                                        1)) == 1
    # A tombstone is not expired again.
    tomb = rules.apply_change(states[0], rules.MessageChange("delete", "retention", 9, T0))
    await store.write_pipeline_batch(PipelineBatch(changed_messages=[tomb]))
    old = await moderation.messages_created_before("app", "2026-01-02T00:00:00.000Z", 10)
    assert [s.message.id for s in old] == ["c1-m002"]
    marks = await moderation.receipts_of("app", "ann")
    assert sorted((m.conversation_id, m.kind, m.seq) for m in marks) == [
        ("c1", "delivered", 3), ("c1", "read", 2)]
