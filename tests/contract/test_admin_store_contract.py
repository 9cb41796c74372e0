"""AdminStore contract (and the Store's app lifecycle): admins with unique emails, single-use
TOTP steps and recovery codes under concurrency, tokens, lockout counters, the root token, the
audit log's filters and pages, per-app settings and secret grace."""

from __future__ import annotations

import asyncio

import pytest

from chatcluster.auth.admin import LOCKOUT_THRESHOLD
from chatcluster.domain.errors import Conflict
from chatcluster.domain.model import App
from chatcluster.ports.admin import (
    AdminPatch,
    AdminRecord,
    AdminStore,
    AdminTokenRecord,
    AppSettings,
    AuditEntry,
    AuditQuery,
    RootToken,
    SecretGrace,
)
from chatcluster.ports.store import Store

T0 = "2026-01-01T00:00:00.000Z"


def admin(admin_id: str, email: str, role: str = "admin") -> AdminRecord:
    return AdminRecord(id=admin_id, email=email, password_hash="$argon2id$x", role=role,
                       created_at=T0)


async def test_admins_are_unique_by_email_and_seen_by_every_instance(admin_store_backend
                                                                     ) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    await store.create_admin(admin("a1", "a@example.com", "owner"))
    with pytest.raises(Conflict):
        await other.create_admin(admin("a2", "a@example.com"))
    await store.create_admin(admin("a2", "b@example.com"))
    assert (await other.get_admin_by_email("a@example.com")).id == "a1"
    assert await other.get_admin_by_email("nobody@example.com") is None
    assert [a.id for a in await other.list_admins()] == ["a1", "a2"]

    updated = await other.update_admin("a2", AdminPatch(role="viewer", mfa_secret="S",
                                                        app_ids=["app1"]))
    assert updated is not None and (updated.role, updated.mfa_secret) == ("viewer", "S")
    assert (await store.get_admin("a2")).app_ids == ["app1"]
    cleared = await store.update_admin("a2", AdminPatch(clear_mfa=True))
    assert cleared is not None and cleared.mfa_secret is None and not cleared.mfa_enabled
    assert cleared.role == "viewer", "fields not in the patch are kept"
    assert await store.update_admin("nope", AdminPatch(role="owner")) is None
    assert await store.delete_admin("a2") is True
    assert await other.get_admin("a2") is None
    assert await store.delete_admin("a2") is False


async def test_a_totp_step_is_accepted_once_and_only_upwards(admin_store_backend) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    await store.create_admin(admin("a1", "a@example.com"))
    results = await asyncio.gather(*(s.use_totp_step("a1", 100) for s in [store, other] * 4))
    assert sorted(results) == [False] * 7 + [True], "exactly one of concurrent replays wins"
    assert await store.use_totp_step("a1", 99) is False, "an older step is a replay too"
    assert await other.use_totp_step("a1", 101) is True
    assert await store.use_totp_step("nope", 5) is False


async def test_a_recovery_code_is_used_once(admin_store_backend) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    await store.create_admin(admin("a1", "a@example.com"))
    await store.update_admin("a1", AdminPatch(mfa_enabled=True,
                                              recovery_digests=["d1", "d2", "d3"]))
    results = await asyncio.gather(*(s.use_recovery_code("a1", "d2")
                                     for s in [store, other] * 3))
    assert sorted(results) == [False] * 5 + [True]
    assert await store.use_recovery_code("a1", "zz") is False
    assert (await other.get_admin("a1")).recovery_digests == ["d1", "d3"]


async def test_tokens_are_found_by_digest_and_revoked(admin_store_backend) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    for digest, who in (("t1", "a1"), ("t2", "a1"), ("t3", "a2")):
        await store.save_token(AdminTokenRecord(digest=digest, admin_id=who, created_at=T0,
                                                expires_at=2e9))
    assert (await other.get_token("t1")).admin_id == "a1"
    assert await other.get_token("nope") is None
    await other.revoke_token("t1")
    assert (await store.get_token("t1")).revoked is True
    assert (await store.get_token("t2")).revoked is False
    await store.revoke_admin_tokens("a1")
    assert (await other.get_token("t2")).revoked is True
    assert (await other.get_token("t3")).revoked is False


async def test_lockout_counts_every_concurrent_failure(admin_store_backend) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    assert (await store.get_lockout("k")).failures == 0
    now = 1_800_000_000.0
    states = await asyncio.gather(*(s.record_login_failure("k", now)
                                    for s in [store, other] * 2))
    assert sorted(st.failures for st in states) == [1, 2, 3, 4]
    assert all(st.locked_until is None for st in states)
    state = await store.record_login_failure("k", now + 1)
    assert state.failures == LOCKOUT_THRESHOLD and state.locked_until is not None
    assert (await other.get_lockout("k")).locked_until == state.locked_until
    assert (await other.get_lockout("other-key")).failures == 0
    await other.clear_lockout("k")
    assert (await store.get_lockout("k")).failures == 0


async def test_the_root_token_rotation_is_shared(admin_store_backend) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    assert await store.get_root_token() is None
    await store.set_root_token(RootToken(base_digest="b", current_digest="c1", rotated_at=T0))
    await other.set_root_token(RootToken(base_digest="b", current_digest="c2", rotated_at=T0))
    assert (await store.get_root_token()).current_digest == "c2"


async def test_audit_filters_and_pages_newest_first(admin_store_backend) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    for i in range(7):
        await store.append_audit(AuditEntry(
            id=f"e{i}", at=f"2026-01-01T00:00:{i // 2:02d}.000Z",
            actor="root" if i % 2 else "a1", action="app.create" if i < 4 else "app.delete",
            app_id=f"app{i % 3}", ip="127.0.0.1", user_agent="ua", detail={"i": i}))
    everything = await other.query_audit(AuditQuery(), 100)
    assert [e.id for e in everything] == ["e6", "e5", "e4", "e3", "e2", "e1", "e0"]
    assert everything[0].detail == {"i": 6} and everything[0].ip == "127.0.0.1"
    # Pages of 3, each starting after the last (at, id) of the previous one.
    seen: list[str] = []
    before = None
    while True:
        page = await other.query_audit(AuditQuery(before=before), 3)
        seen += [e.id for e in page]
        if len(page) < 3:
            break
        before = (page[-1].at, page[-1].id)
    assert seen == [e.id for e in everything]
    assert [e.id for e in await other.query_audit(AuditQuery(actor="root"), 100)] == [
        "e5", "e3", "e1"]
    assert [e.id for e in await other.query_audit(
        AuditQuery(action="app.create", app_id="app0"), 100)] == ["e3", "e0"]
    window = AuditQuery(since="2026-01-01T00:00:01.000Z", until="2026-01-01T00:00:03.000Z")
    assert [e.id for e in await other.query_audit(window, 100)] == ["e5", "e4", "e3", "e2"]


async def test_app_settings_and_secret_grace(admin_store_backend) -> None:
    store: AdminStore = await admin_store_backend.open()
    other: AdminStore = await admin_store_backend.open()
    assert await store.get_app_settings("app1") is None
    await store.put_app_settings(AppSettings(app_id="app1", message_retention_days=30,
                                             allowed_origins=["https://a.example"]))
    found = await other.get_app_settings("app1")
    assert found is not None and found.message_retention_days == 30
    assert found.allowed_origins == ["https://a.example"]
    assert found.token_requests_per_minute is None
    await store.set_secret_grace(SecretGrace(app_id="app1", digest="old", until=5.0), "app1")
    assert await other.get_secret_grace("app1") == SecretGrace(app_id="app1", digest="old",
                                                               until=5.0)
    await other.set_secret_grace(None, "app1")
    assert await store.get_secret_grace("app1") is None
    await store.set_secret_grace(SecretGrace(app_id="app1", digest="old", until=5.0), "app1")
    await other.forget_app("app1")
    assert await store.get_app_settings("app1") is None
    assert await store.get_secret_grace("app1") is None


async def test_store_app_lifecycle(store_backend) -> None:
    store: Store = await store_backend.open()
    other: Store = await store_backend.open()
    for i in range(5):
        await store.create_app(App(id=f"app{i}", name=f"n{i}", secret_digest=f"d{i}",
                                   created_at=T0))
    assert [a.id for a in await other.list_apps(None, 3)] == ["app0", "app1", "app2"]
    assert [a.id for a in await other.list_apps("app2", 3)] == ["app3", "app4"]
    updated = await other.update_app("app1", name="renamed", disabled=True)
    assert updated is not None and (updated.name, updated.disabled) == ("renamed", True)
    assert updated.secret_digest == "d1", "fields not given are kept"
    rotated = await store.update_app("app1", secret_digest="d1b", disabled=False)
    assert rotated is not None and (rotated.secret_digest, rotated.disabled) == ("d1b", False)
    assert rotated.name == "renamed"
    assert await store.update_app("nope", name="x") is None
    assert await other.delete_app("app3") is True
    assert await store.get_app("app3") is None
    assert await store.delete_app("app3") is False
    assert [a.id for a in await store.list_apps(None, 10)] == ["app0", "app1", "app2", "app4"]
