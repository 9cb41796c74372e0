"""Sequencer on SQLite (``sequencer.db``, its own file so reservations never wait behind the
pipeline's batches). SQLite's write lock makes each reservation atomic across processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from chatcluster.domain.model import Message
from chatcluster.ports.sequencer import Reservation

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    conversation_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,
    last_event_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    conversation_id TEXT NOT NULL, sender_id TEXT NOT NULL, client_msg_id TEXT NOT NULL,
    message_id TEXT NOT NULL, event_seq INTEGER NOT NULL, message BLOB NOT NULL,
    PRIMARY KEY (conversation_id, sender_id, client_msg_id)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS reservations_by_id ON reservations(message_id);
"""

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Message)


class SqliteSequencer:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "sequencer.db", SCHEMA)

    async def reserve_message(self, draft: Message) -> Reservation:
        def w(c: sqlite3.Connection) -> Reservation:
            row = c.execute(
                "SELECT message, event_seq FROM reservations WHERE conversation_id=? "
                "AND sender_id=? AND client_msg_id=?",
                (draft.conversation_id, draft.sender_id, draft.client_msg_id)).fetchone()
            if row is not None:
                return Reservation(_dec.decode(row[0]), row[1], created=False)
            seq, event_seq = c.execute(
                "INSERT INTO counters (conversation_id, last_seq, last_event_seq) VALUES (?,1,1) "
                "ON CONFLICT (conversation_id) DO UPDATE SET last_seq=last_seq+1, "
                "last_event_seq=last_event_seq+1 RETURNING last_seq, last_event_seq",
                (draft.conversation_id,)).fetchone()
            message = msgspec.structs.replace(draft, seq=seq)
            c.execute("INSERT INTO reservations (conversation_id, sender_id, client_msg_id, "
                      "message_id, event_seq, message) VALUES (?,?,?,?,?,?)",
                      (draft.conversation_id, draft.sender_id, draft.client_msg_id, draft.id,
                       event_seq, _enc.encode(message)))
            return Reservation(message, event_seq, created=True)
        return await self.db.write(w)

    async def next_event_seq(self, conversation_id: str) -> int:
        def w(c: sqlite3.Connection) -> int:
            row = c.execute(
                "INSERT INTO counters (conversation_id, last_seq, last_event_seq) VALUES (?,0,1) "
                "ON CONFLICT (conversation_id) DO UPDATE SET last_event_seq=last_event_seq+1 "
                "RETURNING last_event_seq", (conversation_id,)).fetchone()
            return int(row[0])
        return await self.db.write(w)

    async def reserved_message(self, message_id: str) -> Message | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT message FROM reservations WHERE message_id=?", (message_id,)).fetchone())
        return None if row is None else _dec.decode(row[0])

    async def last_seq(self, conversation_id: str) -> int:
        row = await self.db.read(lambda c: c.execute(
            "SELECT last_seq FROM counters WHERE conversation_id=?",
            (conversation_id,)).fetchone())
        return 0 if row is None else int(row[0])

    async def close(self) -> None:
        await self.db.close()
