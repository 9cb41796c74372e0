"""AdminStore on SQLite (``admin.db`` in the state directory). Records are JSON beside the
columns that queries need; single-use checks run inside the writer's transaction, so they are
atomic across every process sharing the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from chatcluster.auth.admin import after_failure
from chatcluster.domain.errors import Conflict
from chatcluster.ports.admin import (
    AdminPatch,
    AdminRecord,
    AdminTokenRecord,
    AppSettings,
    AuditEntry,
    AuditQuery,
    Lockout,
    RootToken,
    SecretGrace,
)

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS admins (
    id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS admin_tokens (
    digest TEXT PRIMARY KEY, admin_id TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS admin_tokens_by_admin ON admin_tokens(admin_id);
CREATE TABLE IF NOT EXISTS lockouts (key TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS root_token (id INTEGER PRIMARY KEY CHECK (id = 1), record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    app_id TEXT, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit(at DESC, id DESC);
CREATE TABLE IF NOT EXISTS app_settings (app_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS app_secret_grace (app_id TEXT PRIMARY KEY, record TEXT NOT NULL);
"""

_enc = msgspec.json.Encoder()
_admin = msgspec.json.Decoder(AdminRecord)
_token = msgspec.json.Decoder(AdminTokenRecord)
_lockout = msgspec.json.Decoder(Lockout)
_root = msgspec.json.Decoder(RootToken)
_audit = msgspec.json.Decoder(AuditEntry)
_settings = msgspec.json.Decoder(AppSettings)
_grace = msgspec.json.Decoder(SecretGrace)


def apply_patch(admin: AdminRecord, patch: AdminPatch) -> AdminRecord:
    """The record after ``patch`` (shared with the MongoDB adapter's semantics)."""
    changes = {f: getattr(patch, f) for f in ("role", "disabled", "password_hash", "mfa_secret",
                                              "mfa_enabled", "recovery_digests", "app_ids")
               if getattr(patch, f) is not None}
    if patch.clear_mfa:
        changes.update(mfa_secret=None, mfa_enabled=False, recovery_digests=[])
    return msgspec.structs.replace(admin, **changes)


class SqliteAdminStore:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "admin.db", SCHEMA)

    # admins -----------------------------------------------------------------------------------
    async def create_admin(self, admin: AdminRecord) -> None:
        def w(c: sqlite3.Connection) -> None:
            try:
                c.execute("INSERT INTO admins (id, email, created_at, record) VALUES (?,?,?,?)",
                          (admin.id, admin.email, admin.created_at, _enc.encode(admin)))
            except sqlite3.IntegrityError:
                raise Conflict("an admin with this email exists") from None
        await self.db.write(w)

    async def get_admin(self, admin_id: str) -> AdminRecord | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT record FROM admins WHERE id=?", (admin_id,)).fetchone())
        return None if row is None else _admin.decode(row[0])

    async def get_admin_by_email(self, email: str) -> AdminRecord | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT record FROM admins WHERE email=?", (email,)).fetchone())
        return None if row is None else _admin.decode(row[0])

    async def list_admins(self) -> list[AdminRecord]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT record FROM admins ORDER BY created_at, id").fetchall())
        return [_admin.decode(r[0]) for r in rows]

    def _modify(self, c: sqlite3.Connection, admin_id: str, patch: AdminPatch
                ) -> AdminRecord | None:
        row = c.execute("SELECT record FROM admins WHERE id=?", (admin_id,)).fetchone()
        if row is None:
            return None
        admin = apply_patch(_admin.decode(row[0]), patch)
        c.execute("UPDATE admins SET record=? WHERE id=?", (_enc.encode(admin), admin_id))
        return admin

    async def update_admin(self, admin_id: str, patch: AdminPatch) -> AdminRecord | None:
        return await self.db.write(lambda c: self._modify(c, admin_id, patch))

    async def delete_admin(self, admin_id: str) -> bool:
        cur = await self.db.write(lambda c: c.execute("DELETE FROM admins WHERE id=?",
                                                      (admin_id,)))
        return bool(cur.rowcount == 1)

    async def use_totp_step(self, admin_id: str, step: int) -> bool:
        def w(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT record FROM admins WHERE id=?", (admin_id,)).fetchone()
            if row is None:
                return False
            admin = _admin.decode(row[0])
            if step <= admin.totp_last_step:
                return False
            admin.totp_last_step = step
            c.execute("UPDATE admins SET record=? WHERE id=?", (_enc.encode(admin), admin_id))
            return True
        return await self.db.write(w)

    async def use_recovery_code(self, admin_id: str, code_digest: str) -> bool:
        def w(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT record FROM admins WHERE id=?", (admin_id,)).fetchone()
            if row is None:
                return False
            admin = _admin.decode(row[0])
            if code_digest not in admin.recovery_digests:
                return False
            admin.recovery_digests = [d for d in admin.recovery_digests if d != code_digest]
            c.execute("UPDATE admins SET record=? WHERE id=?", (_enc.encode(admin), admin_id))
            return True
        return await self.db.write(w)

    # admin tokens -----------------------------------------------------------------------------
    async def save_token(self, token: AdminTokenRecord) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO admin_tokens (digest, admin_id, record) VALUES (?,?,?)",
            (token.digest, token.admin_id, _enc.encode(token))))

    async def get_token(self, token_digest: str) -> AdminTokenRecord | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT record FROM admin_tokens WHERE digest=?", (token_digest,)).fetchone())
        return None if row is None else _token.decode(row[0])

    async def revoke_token(self, token_digest: str) -> None:
        def w(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT record FROM admin_tokens WHERE digest=?",
                            (token_digest,)).fetchone()
            if row is not None:
                token = _token.decode(row[0])
                token.revoked = True
                c.execute("UPDATE admin_tokens SET record=? WHERE digest=?",
                          (_enc.encode(token), token_digest))
        await self.db.write(w)

    async def revoke_admin_tokens(self, admin_id: str) -> None:
        def w(c: sqlite3.Connection) -> None:
            rows = c.execute("SELECT digest, record FROM admin_tokens WHERE admin_id=?",
                             (admin_id,)).fetchall()
            for token_digest, record in rows:
                token = _token.decode(record)
                token.revoked = True
                c.execute("UPDATE admin_tokens SET record=? WHERE digest=?",
                          (_enc.encode(token), token_digest))
        await self.db.write(w)

    # lockout ----------------------------------------------------------------------------------
    async def get_lockout(self, key: str) -> Lockout:
        row = await self.db.read(lambda c: c.execute(
            "SELECT record FROM lockouts WHERE key=?", (key,)).fetchone())
        return Lockout() if row is None else _lockout.decode(row[0])

    async def record_login_failure(self, key: str, now: float) -> Lockout:
        def w(c: sqlite3.Connection) -> Lockout:
            row = c.execute("SELECT record FROM lockouts WHERE key=?", (key,)).fetchone()
            old = Lockout() if row is None else _lockout.decode(row[0])
            failures, first, locked_until = after_failure(old.failures, old.first_failure_at,
                                                          now)
            new = Lockout(failures=failures, first_failure_at=first,
                          locked_until=locked_until or old.locked_until)
            c.execute("INSERT INTO lockouts (key, record) VALUES (?,?) ON CONFLICT (key) "
                      "DO UPDATE SET record=excluded.record", (key, _enc.encode(new)))
            return new
        return await self.db.write(w)

    async def clear_lockout(self, key: str) -> None:
        await self.db.write(lambda c: c.execute("DELETE FROM lockouts WHERE key=?", (key,)))

    # root token -------------------------------------------------------------------------------
    async def get_root_token(self) -> RootToken | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT record FROM root_token WHERE id=1").fetchone())
        return None if row is None else _root.decode(row[0])

    async def set_root_token(self, root: RootToken) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO root_token (id, record) VALUES (1, ?) ON CONFLICT (id) "
            "DO UPDATE SET record=excluded.record", (_enc.encode(root),)))

    # audit ------------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO audit (id, at, actor, action, app_id, record) VALUES (?,?,?,?,?,?)",
            (entry.id, entry.at, entry.actor, entry.action, entry.app_id, _enc.encode(entry))))

    async def query_audit(self, query: AuditQuery, limit: int) -> list[AuditEntry]:
        sql = "SELECT record FROM audit WHERE 1=1"
        args: list[object] = []
        for column, value in (("actor", query.actor), ("action", query.action),
                              ("app_id", query.app_id)):
            if value is not None:
                sql += f" AND {column}=?"
                args.append(value)
        if query.since is not None:
            sql += " AND at >= ?"
            args.append(query.since)
        if query.until is not None:
            sql += " AND at < ?"
            args.append(query.until)
        if query.before is not None:
            sql += " AND (at, id) < (?, ?)"
            args += list(query.before)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        args.append(limit)
        rows = await self.db.read(lambda c: c.execute(sql, args).fetchall())
        return [_audit.decode(r[0]) for r in rows]

    # apps -------------------------------------------------------------------------------------
    async def get_app_settings(self, app_id: str) -> AppSettings | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT record FROM app_settings WHERE app_id=?", (app_id,)).fetchone())
        return None if row is None else _settings.decode(row[0])

    async def put_app_settings(self, settings: AppSettings) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO app_settings (app_id, record) VALUES (?,?) ON CONFLICT (app_id) "
            "DO UPDATE SET record=excluded.record", (settings.app_id, _enc.encode(settings))))

    async def get_secret_grace(self, app_id: str) -> SecretGrace | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT record FROM app_secret_grace WHERE app_id=?", (app_id,)).fetchone())
        return None if row is None else _grace.decode(row[0])

    async def set_secret_grace(self, grace: SecretGrace | None, app_id: str) -> None:
        def w(c: sqlite3.Connection) -> None:
            if grace is None:
                c.execute("DELETE FROM app_secret_grace WHERE app_id=?", (app_id,))
            else:
                c.execute("INSERT INTO app_secret_grace (app_id, record) VALUES (?,?) "
                          "ON CONFLICT (app_id) DO UPDATE SET record=excluded.record",
                          (app_id, _enc.encode(grace)))
        await self.db.write(w)

    async def forget_app(self, app_id: str) -> None:
        def w(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM app_settings WHERE app_id=?", (app_id,))
            c.execute("DELETE FROM app_secret_grace WHERE app_id=?", (app_id,))
        await self.db.write(w)

    async def ping(self) -> None:
        await self.db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self.db.close()
