"""ModerationStore on SQLite: its tables live in ``store.db`` beside the Store's, so users,
sessions and messages are read with plain joins (``ports.moderation``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from chatcluster.domain.model import MessageState
from chatcluster.domain.moderation import Ban, Flag, FlagStatus
from chatcluster.ports.moderation import (
    ConversationModeration,
    SessionDevice,
    SessionInfo,
    UserRecord,
)
from chatcluster.ports.store import ReceiptMark

from .database import Database, app_page_filter
from .store import SCHEMA as STORE_SCHEMA

SCHEMA = STORE_SCHEMA + """
CREATE TABLE IF NOT EXISTS bans (
    app_id TEXT NOT NULL, user_id TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL,
    reason TEXT, expires_at TEXT, PRIMARY KEY (app_id, user_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bans_by_time ON bans(at);
CREATE TABLE IF NOT EXISTS mutes (
    conversation_id TEXT NOT NULL, user_id TEXT NOT NULL, app_id TEXT NOT NULL,
    by TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (conversation_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS frozen_conversations (
    conversation_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL
    ) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_devices (
    session_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, user_id TEXT NOT NULL,
    user_agent TEXT, ip TEXT, last_refresh_at TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(app_id, user_id);
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages(sender_id, id);
CREATE TABLE IF NOT EXISTS flags (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, message_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL, sender_id TEXT NOT NULL, flagged_by TEXT NOT NULL,
    reason TEXT NOT NULL, note TEXT, created_at TEXT NOT NULL, status TEXT NOT NULL,
    resolved_by TEXT, resolved_at TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flags_queue ON flags(app_id, status, created_at, id);
CREATE INDEX IF NOT EXISTS flags_by_app_time ON flags(app_id, created_at, id);
CREATE INDEX IF NOT EXISTS flags_by_message ON flags(app_id, message_id, status);
CREATE INDEX IF NOT EXISTS flags_by_user ON flags(app_id, flagged_by);
CREATE TABLE IF NOT EXISTS moderation_version (id INTEGER PRIMARY KEY CHECK (id = 0),
    v INTEGER NOT NULL);
INSERT OR IGNORE INTO moderation_version (id, v) VALUES (0, 0);
"""
_BUMP = "UPDATE moderation_version SET v = v + 1 WHERE id = 0"

_msg_dec = msgspec.msgpack.Decoder(MessageState)
# Rows decoded per step while filtering messages by time (their time is inside the blob).
SCAN_STEP = 500


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _ban(row: tuple[str, ...]) -> Ban:
    return Ban(app_id=row[0], user_id=row[1], by=row[2], at=row[3], reason=row[4],
               expires_at=row[5])


_FLAG_COLUMNS = ("id, app_id, message_id, conversation_id, sender_id, flagged_by, reason, note, "
                 "created_at, status, resolved_by, resolved_at")


def _flag(row: tuple[str, ...]) -> Flag:
    return Flag(id=row[0], app_id=row[1], message_id=row[2], conversation_id=row[3],
                sender_id=row[4], flagged_by=row[5], reason=row[6],  # type: ignore[arg-type]
                note=row[7], created_at=row[8], status=row[9],  # type: ignore[arg-type]
                resolved_by=row[10], resolved_at=row[11])


class SqliteModerationStore:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "store.db", SCHEMA)

    # bans ---------------------------------------------------------------------------------------
    async def set_ban(self, ban: Ban) -> None:
        def w(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO bans (app_id, user_id, by, at, reason, "
                      "expires_at) VALUES (?,?,?,?,?,?)",
                      (ban.app_id, ban.user_id, ban.by, ban.at, ban.reason, ban.expires_at))
            c.execute(_BUMP)
        await self.db.write(w)

    async def remove_ban(self, app_id: str, user_id: str) -> bool:
        def w(c: sqlite3.Connection) -> bool:
            cur = c.execute("DELETE FROM bans WHERE app_id=? AND user_id=?", (app_id, user_id))
            c.execute(_BUMP)
            return bool(cur.rowcount == 1)
        return await self.db.write(w)

    async def version(self) -> int:
        row = await self.db.read(lambda c: c.execute(
            "SELECT v FROM moderation_version WHERE id = 0").fetchone())
        return int(row[0]) if row else 0

    async def get_ban(self, app_id: str, user_id: str) -> Ban | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT app_id, user_id, by, at, reason, expires_at FROM bans "
            "WHERE app_id=? AND user_id=?", (app_id, user_id)).fetchone())
        return None if row is None else _ban(row)

    async def list_bans(self, app_id: str, after: str | None, limit: int) -> list[Ban]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT app_id, user_id, by, at, reason, expires_at FROM bans "
            "WHERE app_id=? AND user_id > ? ORDER BY user_id LIMIT ?",
            (app_id, after or "", limit)).fetchall())
        return [_ban(r) for r in rows]

    async def bans_since(self, since: str) -> list[Ban]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT app_id, user_id, by, at, reason, expires_at FROM bans WHERE at >= ?",
            (since,)).fetchall())
        return [_ban(r) for r in rows]

    # conversations ----------------------------------------------------------------------------
    async def set_mute(self, app_id: str, conversation_id: str, user_id: str, muted: bool,
                       by: str, at: str) -> bool:
        def w(c: sqlite3.Connection) -> bool:
            if muted:
                cur = c.execute("INSERT OR IGNORE INTO mutes (conversation_id, user_id, app_id, "
                                "by, at) VALUES (?,?,?,?,?)",
                                (conversation_id, user_id, app_id, by, at))
            else:
                cur = c.execute("DELETE FROM mutes WHERE conversation_id=? AND user_id=?",
                                (conversation_id, user_id))
            c.execute(_BUMP)
            return bool(cur.rowcount == 1)
        return await self.db.write(w)

    async def set_frozen(self, app_id: str, conversation_id: str, frozen: bool, by: str,
                         at: str) -> bool:
        def w(c: sqlite3.Connection) -> bool:
            if frozen:
                cur = c.execute("INSERT OR IGNORE INTO frozen_conversations (conversation_id, "
                                "app_id, by, at) VALUES (?,?,?,?)",
                                (conversation_id, app_id, by, at))
            else:
                cur = c.execute("DELETE FROM frozen_conversations WHERE conversation_id=?",
                                (conversation_id,))
            c.execute(_BUMP)
            return bool(cur.rowcount == 1)
        return await self.db.write(w)

    async def conversation_moderation(self, conversation_id: str) -> ConversationModeration:
        def q(c: sqlite3.Connection) -> ConversationModeration:
            frozen = c.execute("SELECT by, at FROM frozen_conversations WHERE conversation_id=?",
                               (conversation_id,)).fetchone()
            muted = [r[0] for r in c.execute(
                "SELECT user_id FROM mutes WHERE conversation_id=? ORDER BY user_id",
                (conversation_id,))]
            return ConversationModeration(
                conversation_id=conversation_id, frozen=frozen is not None,
                frozen_by=frozen[0] if frozen else None, frozen_at=frozen[1] if frozen else None,
                muted=muted)
        return await self.db.read(q)

    # flags --------------------------------------------------------------------------------------
    async def add_flag(self, flag: Flag) -> Flag:
        def w(c: sqlite3.Connection) -> Flag:
            c.execute(f"INSERT INTO flags ({_FLAG_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                      "ON CONFLICT (id) DO NOTHING",
                      (flag.id, flag.app_id, flag.message_id, flag.conversation_id,
                       flag.sender_id, flag.flagged_by, flag.reason, flag.note,
                       flag.created_at, flag.status, flag.resolved_by, flag.resolved_at))
            row = c.execute(f"SELECT {_FLAG_COLUMNS} FROM flags WHERE id=?",
                            (flag.id,)).fetchone()
            return _flag(row)
        return await self.db.write(w)

    async def get_flag(self, app_id: str, flag_id: str) -> Flag | None:
        row = await self.db.read(lambda c: c.execute(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE id=? AND app_id=?",
            (flag_id, app_id)).fetchone())
        return _flag(row) if row is not None else None

    async def list_flags(self, app_id: str, status: FlagStatus | None,
                         after: tuple[str, str] | None, limit: int) -> list[Flag]:
        where, args = app_page_filter(app_id, status, after, ">")
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE {where} ORDER BY created_at, id LIMIT ?",
            (*args, limit)).fetchall())
        return [_flag(r) for r in rows]

    async def resolve_flags(self, app_id: str, message_id: str, status: FlagStatus, by: str,
                            at: str) -> int:
        cur = await self.db.write(lambda c: c.execute(
            "UPDATE flags SET status=?, resolved_by=?, resolved_at=? "
            "WHERE app_id=? AND message_id=? AND status='open'",
            (status, by, at, app_id, message_id)))
        return int(cur.rowcount)

    async def flags_by(self, app_id: str, user_id: str) -> list[Flag]:
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE app_id=? AND flagged_by=? "
            "ORDER BY created_at, id", (app_id, user_id)).fetchall())
        return [_flag(r) for r in rows]

    # users and sessions -----------------------------------------------------------------------
    async def record_device(self, device: SessionDevice) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO session_devices (session_id, app_id, user_id, user_agent, ip, "
            "last_refresh_at) VALUES (?,?,?,?,?,?) ON CONFLICT (session_id) DO UPDATE SET "
            "user_agent=COALESCE(excluded.user_agent, user_agent), "
            "ip=COALESCE(excluded.ip, ip), "
            "last_refresh_at=COALESCE(excluded.last_refresh_at, last_refresh_at)",
            (device.session_id, device.app_id, device.user_id, device.user_agent, device.ip,
             device.last_refresh_at)))

    async def list_users(self, app_id: str, prefix: str | None, after: str | None,
                         limit: int) -> list[UserRecord]:
        def q(c: sqlite3.Connection) -> list[tuple[str, str | None, str]]:
            sql = ("SELECT user_id, display_name, created_at FROM users "
                   "WHERE app_id=? AND user_id > ?")
            args: list[object] = [app_id, after or ""]
            if prefix:
                sql += (" AND (user_id LIKE ? ESCAPE '\\' OR display_name LIKE ? ESCAPE '\\')"
                        " AND (substr(user_id, 1, ?) = ? OR substr(display_name, 1, ?) = ?)")
                like = _like_prefix(prefix)
                # LIKE is case-insensitive for ASCII: the substr() test makes it exact.
                args += [like, like, len(prefix), prefix, len(prefix), prefix]
            sql += " ORDER BY user_id LIMIT ?"
            args.append(limit)
            return c.execute(sql, args).fetchall()
        rows = await self.db.read(q)
        return [UserRecord(app_id=app_id, user_id=r[0], display_name=r[1], created_at=r[2])
                for r in rows]

    async def get_user(self, app_id: str, user_id: str) -> UserRecord | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT display_name, created_at FROM users WHERE app_id=? AND user_id=?",
            (app_id, user_id)).fetchone())
        if row is None:
            return None
        return UserRecord(app_id=app_id, user_id=user_id, display_name=row[0],
                          created_at=row[1])

    async def user_sessions(self, app_id: str, user_id: str) -> list[SessionInfo]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT s.id, s.created_at, s.revoked_at, d.last_refresh_at, d.user_agent, d.ip "
            "FROM sessions s LEFT JOIN session_devices d ON d.session_id = s.id "
            "WHERE s.app_id=? AND s.user_id=? ORDER BY s.created_at DESC, s.id DESC",
            (app_id, user_id)).fetchall())
        return [SessionInfo(id=r[0], user_id=user_id, created_at=r[1], revoked_at=r[2],
                            last_refresh_at=r[3], user_agent=r[4], ip=r[5]) for r in rows]

    async def erase_profile(self, app_id: str, user_id: str) -> None:
        def w(c: sqlite3.Connection) -> None:
            c.execute("UPDATE users SET display_name=NULL WHERE app_id=? AND user_id=?",
                      (app_id, user_id))
            c.execute("UPDATE session_devices SET user_agent=NULL, ip=NULL "
                      "WHERE app_id=? AND user_id=?", (app_id, user_id))
            c.execute("UPDATE flags SET note=NULL WHERE app_id=? AND flagged_by=?",
                      (app_id, user_id))
        await self.db.write(w)

    # messages ---------------------------------------------------------------------------------
    async def messages_sent_by(self, app_id: str, user_id: str, after: str | None,
                               limit: int) -> list[MessageState]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT m.state FROM messages m JOIN conversations k ON k.id = m.conversation_id "
            "WHERE m.sender_id=? AND k.app_id=? AND m.id > ? ORDER BY m.id LIMIT ?",
            (user_id, app_id, after or "", limit)).fetchall())
        return [_msg_dec.decode(r[0]) for r in rows]

    async def messages_created_before(self, app_id: str, before: str,
                                      limit: int) -> list[MessageState]:
        # A message's time is inside its blob: walk the app's live messages by id and decode.
        # Linear in the app's live messages per run; fine for the embedded backend's sizes.
        def q(c: sqlite3.Connection) -> list[MessageState]:
            found: list[MessageState] = []
            after = ""
            while len(found) < limit:
                rows = c.execute(
                    "SELECT m.id, m.state FROM messages m JOIN conversations k "
                    "ON k.id = m.conversation_id WHERE k.app_id=? AND m.deleted=0 AND m.id > ? "
                    "ORDER BY m.id LIMIT ?", (app_id, after, SCAN_STEP)).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                for _, blob in rows:
                    state = _msg_dec.decode(blob)
                    if state.message.created_at < before:
                        found.append(state)
            return found[:limit]
        return await self.db.read(q)

    async def receipts_of(self, app_id: str, user_id: str) -> list[ReceiptMark]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT r.conversation_id, r.delivered_seq, r.read_seq FROM receipts r "
            "JOIN conversations k ON k.id = r.conversation_id "
            "WHERE r.user_id=? AND k.app_id=? ORDER BY r.conversation_id",
            (user_id, app_id)).fetchall())
        out: list[ReceiptMark] = []
        for cid, delivered, read in rows:
            if delivered:
                out.append(ReceiptMark(cid, user_id, "delivered", int(delivered)))
            if read:
                out.append(ReceiptMark(cid, user_id, "read", int(read)))
        return out

    async def ping(self) -> None:
        await self.db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self.db.close()
