"""Store on SQLite (``store.db``). Message and conversation states are msgpack blobs beside the
columns that queries need, so reading a page decodes exactly the rows it returns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from chatcluster.domain.errors import VersionConflict
from chatcluster.domain.model import (
    App,
    ConversationActivity,
    ConversationState,
    MessageState,
    Session,
)
from chatcluster.ports.store import (
    ConversationExtras,
    LoggedEvent,
    PipelineBatch,
    ReceiptMark,
    decode_cursor,
    encode_cursor,
)

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_digest TEXT NOT NULL,
    created_at TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS users (
    app_id TEXT NOT NULL, user_id TEXT NOT NULL, display_name TEXT, created_at TEXT NOT NULL,
    PRIMARY KEY (app_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, user_id TEXT NOT NULL, refresh_jti TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT);
CREATE INDEX IF NOT EXISTS sessions_revoked ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, direct_key TEXT, version INTEGER NOT NULL,
    state BLOB NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0,
    last_event_seq INTEGER NOT NULL DEFAULT 0, last_message_at TEXT, sort_at TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS conversations_direct
    ON conversations(app_id, direct_key) WHERE direct_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS members (
    conversation_id TEXT NOT NULL, app_id TEXT NOT NULL, user_id TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(app_id, user_id, conversation_id);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL, client_msg_id TEXT NOT NULL, deleted INTEGER NOT NULL,
    state BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_seq ON messages(conversation_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_client_id
    ON messages(conversation_id, sender_id, client_msg_id);
CREATE TABLE IF NOT EXISTS sync_log (
    conversation_id TEXT NOT NULL, event_seq INTEGER NOT NULL, event TEXT NOT NULL,
    message_id TEXT, PRIMARY KEY (conversation_id, event_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    conversation_id TEXT NOT NULL, user_id TEXT NOT NULL,
    delivered_seq INTEGER NOT NULL DEFAULT 0, read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)) WITHOUT ROWID;
"""

_enc = msgspec.msgpack.Encoder()
_conv_dec = msgspec.msgpack.Decoder(ConversationState)
_msg_dec = msgspec.msgpack.Decoder(MessageState)

_ENSURE_USER = (
    "INSERT INTO users (app_id, user_id, display_name, created_at) VALUES (?,?,?,?) "
    "ON CONFLICT (app_id, user_id) DO UPDATE SET "
    "display_name = COALESCE(excluded.display_name, display_name)")
_CREATE_SESSION = ("INSERT INTO sessions (id, app_id, user_id, refresh_jti, created_at, "
                   "revoked_at) VALUES (?,?,?,?,?,?)")


def _session_row(s: Session) -> tuple[str, str, str, str, str, str | None]:
    return (s.id, s.app_id, s.user_id, s.refresh_jti, s.created_at, s.revoked_at)


class SqliteStore:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "store.db", SCHEMA)

    # tenants, users, sessions ---------------------------------------------------------------
    async def create_app(self, app: App) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO apps (id, name, secret_digest, created_at, disabled) VALUES (?,?,?,?,?)",
            (app.id, app.name, app.secret_digest, app.created_at, int(app.disabled))))

    async def get_app(self, app_id: str) -> App | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT id, name, secret_digest, created_at, disabled FROM apps WHERE id=?",
            (app_id,)).fetchone())
        if row is None:
            return None
        return App(id=row[0], name=row[1], secret_digest=row[2], created_at=row[3],
                   disabled=bool(row[4]))

    async def list_apps(self, after: str | None, limit: int) -> list[App]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT id, name, secret_digest, created_at, disabled FROM apps WHERE id > ? "
            "ORDER BY id LIMIT ?", (after or "", limit)).fetchall())
        return [App(id=r[0], name=r[1], secret_digest=r[2], created_at=r[3],
                    disabled=bool(r[4])) for r in rows]

    async def update_app(self, app_id: str, *, name: str | None = None,
                         secret_digest: str | None = None,
                         disabled: bool | None = None) -> App | None:
        def w(c: sqlite3.Connection) -> None:
            c.execute("UPDATE apps SET name=COALESCE(?, name), "
                      "secret_digest=COALESCE(?, secret_digest), "
                      "disabled=COALESCE(?, disabled) WHERE id=?",
                      (name, secret_digest, None if disabled is None else int(disabled),
                       app_id))
        await self.db.write(w)
        return await self.get_app(app_id)

    async def delete_app(self, app_id: str) -> bool:
        cur = await self.db.write(lambda c: c.execute("DELETE FROM apps WHERE id=?", (app_id,)))
        return bool(cur.rowcount == 1)

    async def ensure_user(self, app_id: str, user_id: str, display_name: str | None,
                          now: str) -> None:
        await self.db.write(lambda c: c.execute(
            _ENSURE_USER, (app_id, user_id, display_name, now)))

    async def display_names(self, app_id: str, user_ids: list[str]) -> dict[str, str | None]:
        def q(c: sqlite3.Connection) -> dict[str, str | None]:
            marks = ",".join("?" * len(user_ids))
            rows = c.execute(f"SELECT user_id, display_name FROM users WHERE app_id=? "
                             f"AND user_id IN ({marks})", (app_id, *user_ids)).fetchall()
            return {r[0]: r[1] for r in rows}
        return await self.db.read(q) if user_ids else {}

    async def create_session(self, session: Session) -> None:
        await self.db.write(lambda c: c.execute(_CREATE_SESSION, _session_row(session)))

    async def sign_in(self, session: Session, display_name: str | None) -> None:
        def w(c: sqlite3.Connection) -> None:  # one savepoint: both rows or neither
            c.execute(_ENSURE_USER, (session.app_id, session.user_id, display_name,
                                     session.created_at))
            c.execute(_CREATE_SESSION, _session_row(session))
        await self.db.write(w)

    async def get_session(self, session_id: str) -> Session | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT id, app_id, user_id, refresh_jti, created_at, revoked_at FROM sessions "
            "WHERE id=?", (session_id,)).fetchone())
        if row is None:
            return None
        return Session(id=row[0], app_id=row[1], user_id=row[2], refresh_jti=row[3],
                       created_at=row[4], revoked_at=row[5])

    async def rotate_refresh(self, session_id: str, old_jti: str, new_jti: str) -> bool:
        cur = await self.db.write(lambda c: c.execute(
            "UPDATE sessions SET refresh_jti=? WHERE id=? AND refresh_jti=? AND revoked_at IS NULL",
            (new_jti, session_id, old_jti)))
        return bool(cur.rowcount == 1)

    async def revoke_session(self, session_id: str, now: str) -> None:
        await self.db.write(lambda c: c.execute(
            "UPDATE sessions SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
            (now, session_id)))

    async def revoked_sessions_since(self, since: str) -> list[str]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at >= ?",
            (since,)).fetchall())
        return [r[0] for r in rows]

    # conversations ----------------------------------------------------------------------------
    async def create_conversation(self, conversation: ConversationState) -> ConversationState:
        def w(c: sqlite3.Connection) -> ConversationState:
            if conversation.direct_key is not None:
                row = c.execute("SELECT state FROM conversations WHERE app_id=? AND direct_key=?",
                                (conversation.app_id, conversation.direct_key)).fetchone()
                if row is not None:
                    return _conv_dec.decode(row[0])
            c.execute(
                "INSERT INTO conversations (id, app_id, direct_key, version, state, "
                "last_event_seq, sort_at) VALUES (?,?,?,?,?,?,?)",
                (conversation.id, conversation.app_id, conversation.direct_key,
                 conversation.version, _enc.encode(conversation), conversation.version,
                 conversation.created_at))
            _write_members(c, conversation)
            _log(c, conversation.id, conversation.version, "conversation.updated", None)
            return conversation
        return await self.db.write(w)

    async def get_conversation(self, conversation_id: str) -> ConversationState | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT state FROM conversations WHERE id=?", (conversation_id,)).fetchone())
        return None if row is None else _conv_dec.decode(row[0])

    async def save_conversation(self, conversation: ConversationState,
                                expected_version: int) -> None:
        def w(c: sqlite3.Connection) -> None:
            cur = c.execute(
                "UPDATE conversations SET state=?, version=?, "
                "last_event_seq=MAX(last_event_seq, ?) WHERE id=? AND version=?",
                (_enc.encode(conversation), conversation.version, conversation.version,
                 conversation.id, expected_version))
            if cur.rowcount != 1:
                raise VersionConflict(conversation.id)
            _write_members(c, conversation)
            _log(c, conversation.id, conversation.version, "conversation.updated", None)
        await self.db.write(w)

    async def list_conversations(self, app_id: str, user_id: str, limit: int,
                                 cursor: str | None) -> tuple[list[ConversationState], str | None]:
        after = decode_cursor(cursor) if cursor is not None else None

        def q(c: sqlite3.Connection) -> list[tuple[bytes, str, str]]:
            sql = ("SELECT c.state, c.sort_at, c.id FROM members m JOIN conversations c "
                   "ON c.id = m.conversation_id WHERE m.app_id=? AND m.user_id=?")
            args: tuple[object, ...] = (app_id, user_id)
            if after is not None:
                sql += " AND (c.sort_at, c.id) < (?, ?)"
                args += after
            sql += " ORDER BY c.sort_at DESC, c.id DESC LIMIT ?"
            return c.execute(sql, (*args, limit + 1)).fetchall()
        rows = await self.db.read(q)
        page = rows[:limit]
        nxt = None
        if len(rows) > limit:
            last = page[-1]
            nxt = encode_cursor(last[1], last[2])
        return [_conv_dec.decode(r[0]) for r in page], nxt

    async def conversation_extras(self, conversation_ids: list[str],
                                  user_id: str) -> dict[str, ConversationExtras]:
        def q(c: sqlite3.Connection) -> dict[str, ConversationExtras]:
            out: dict[str, ConversationExtras] = {}
            for cid in conversation_ids:
                row = c.execute("SELECT last_seq, last_event_seq, last_message_at FROM "
                                "conversations WHERE id=?", (cid,)).fetchone()
                if row is None:
                    continue
                marks = dict(c.execute("SELECT user_id, read_seq FROM receipts "
                                       "WHERE conversation_id=?", (cid,)).fetchall())
                unread = c.execute(
                    "SELECT COUNT(*) FROM messages WHERE conversation_id=? AND seq>? "
                    "AND sender_id<>? AND deleted=0",
                    (cid, marks.get(user_id, 0), user_id)).fetchone()[0]
                out[cid] = ConversationExtras(
                    activity=ConversationActivity(last_seq=row[0], last_event_seq=row[1],
                                                  last_message_at=row[2]),
                    read_marks=marks, unread_count=int(unread))
            return out
        return await self.db.read(q) if conversation_ids else {}

    async def related_users(self, app_id: str, user_id: str,
                            others: list[str] | None) -> set[str]:
        def q(c: sqlite3.Connection) -> set[str]:
            sql = ("SELECT DISTINCT m2.user_id FROM members m1 JOIN members m2 "
                   "ON m2.conversation_id = m1.conversation_id "
                   "WHERE m1.app_id=? AND m1.user_id=?")
            args: list[str] = [app_id, user_id]
            if others is not None:
                sql += f" AND m2.user_id IN ({','.join('?' * len(others))})"
                args += others
            return {r[0] for r in c.execute(sql, args)}
        if others is not None and not others:
            return set()
        return await self.db.read(q)

    # messages ---------------------------------------------------------------------------------
    async def get_messages(self, message_ids: list[str]) -> dict[str, MessageState]:
        def q(c: sqlite3.Connection) -> dict[str, MessageState]:
            marks = ",".join("?" * len(message_ids))
            rows = c.execute(f"SELECT id, state FROM messages WHERE id IN ({marks})",
                             message_ids).fetchall()
            return {r[0]: _msg_dec.decode(r[1]) for r in rows}
        return await self.db.read(q) if message_ids else {}

    async def history(self, conversation_id: str, before_seq: int | None,
                      after_seq: int | None, limit: int) -> tuple[list[MessageState], bool]:
        def q(c: sqlite3.Connection) -> list[bytes]:
            if after_seq is not None:
                sql = "SELECT state FROM messages WHERE conversation_id=? AND seq>?"
                args: list[object] = [conversation_id, after_seq]
                if before_seq is not None:
                    sql += " AND seq<?"
                    args.append(before_seq)
                sql += " ORDER BY seq ASC LIMIT ?"
            else:
                sql = "SELECT state FROM messages WHERE conversation_id=?"
                args = [conversation_id]
                if before_seq is not None:
                    sql += " AND seq<?"
                    args.append(before_seq)
                sql += " ORDER BY seq DESC LIMIT ?"
            return [r[0] for r in c.execute(sql, (*args, limit + 1))]
        rows = await self.db.read(q)
        has_more = len(rows) > limit
        states = [_msg_dec.decode(b) for b in rows[:limit]]
        if after_seq is None:
            states.reverse()
        return states, has_more

    async def sync_log(self, conversation_id: str, after_event_seq: int,
                       limit: int) -> tuple[list[LoggedEvent], bool]:
        rows = await self.db.read(lambda c: c.execute(
            "SELECT event_seq, event, message_id FROM sync_log WHERE conversation_id=? "
            "AND event_seq>? ORDER BY event_seq LIMIT ?",
            (conversation_id, after_event_seq, limit + 1)).fetchall())
        events = [LoggedEvent(conversation_id, r[0], r[1], r[2]) for r in rows[:limit]]
        return events, len(rows) > limit

    async def write_pipeline_batch(self, batch: PipelineBatch) -> list[ReceiptMark]:
        def w(c: sqlite3.Connection) -> list[ReceiptMark]:
            c.executemany(
                "INSERT OR IGNORE INTO messages (id, conversation_id, seq, sender_id, "
                "client_msg_id, deleted, state) VALUES (?,?,?,?,?,?,?)",
                [(s.message.id, s.message.conversation_id, s.message.seq, s.message.sender_id,
                  s.message.client_msg_id, int(s.message.deleted), _enc.encode(s))
                 for s in batch.new_messages])
            c.executemany("UPDATE messages SET deleted=?, state=? WHERE id=?",
                          [(int(s.message.deleted), _enc.encode(s), s.message.id)
                           for s in batch.changed_messages])
            c.executemany(
                "INSERT OR IGNORE INTO sync_log (conversation_id, event_seq, event, message_id) "
                "VALUES (?,?,?,?)",
                [(e.conversation_id, e.event_seq, e.event, e.message_id) for e in batch.events])
            c.executemany(
                "UPDATE conversations SET last_seq=MAX(last_seq, ?2), "
                "last_event_seq=MAX(last_event_seq, ?3), "
                "last_message_at=CASE WHEN ?1 IS NULL THEN last_message_at "
                "WHEN last_message_at IS NULL OR ?1 > last_message_at THEN ?1 "
                "ELSE last_message_at END, "
                "sort_at=MAX(sort_at, COALESCE(?1, '')) WHERE id=?4",
                [(a.last_message_at, a.last_seq, a.last_event_seq, a.conversation_id)
                 for a in batch.activity])
            moved: list[ReceiptMark] = []
            for r in batch.receipts:
                col = "read_seq" if r.kind == "read" else "delivered_seq"
                row = c.execute(f"SELECT {col} FROM receipts WHERE conversation_id=? "
                                f"AND user_id=?", (r.conversation_id, r.user_id)).fetchone()
                if row is not None and row[0] >= r.seq:
                    continue
                c.execute(f"INSERT INTO receipts (conversation_id, user_id, {col}) VALUES (?,?,?) "
                          f"ON CONFLICT (conversation_id, user_id) DO UPDATE SET "
                          f"{col}=MAX({col}, excluded.{col})",
                          (r.conversation_id, r.user_id, r.seq))
                moved.append(r)
            return moved
        return await self.db.write(w)

    async def ping(self) -> None:
        await self.db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self.db.close()


def _write_members(c: sqlite3.Connection, conversation: ConversationState) -> None:
    c.execute("DELETE FROM members WHERE conversation_id=?", (conversation.id,))
    c.executemany("INSERT INTO members (conversation_id, app_id, user_id) VALUES (?,?,?)",
                  [(conversation.id, conversation.app_id, m) for m in conversation.members])


def _log(c: sqlite3.Connection, conversation_id: str, event_seq: int, event: str,
         message_id: str | None) -> None:
    c.execute("INSERT OR IGNORE INTO sync_log (conversation_id, event_seq, event, message_id) "
              "VALUES (?,?,?,?)", (conversation_id, event_seq, event, message_id))
