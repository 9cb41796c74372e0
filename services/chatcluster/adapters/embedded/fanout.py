"""Fanout on SQLite (``fanout.db``): publishers append frames, every replica tails the table.

A frame lives about a minute, then any subscriber prunes it; a replica that was away longer
has missed it, which the port allows (clients recover with ``conversation.sync``). Tailing is
an indexed range read every millisecond or two, done on the event loop: cheaper than a
thread hop, and WAL readers never wait for writers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from chatcluster.ports.fanout import Envelope

from .database import Database, connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, body BLOB NOT NULL);
"""

RETENTION_S = 60.0
# Tail quickly while frames flow; back off to IDLE_POLL_S after a quiet second, so an idle
# replica costs next to nothing and the first frame after a pause waits at most 10 ms.
BUSY_POLL_S = 0.0005
ACTIVE_POLL_S = 0.002
IDLE_POLL_S = 0.010
QUIET_AFTER_S = 1.0

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Envelope)


class SqliteFanout:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "fanout.db", SCHEMA)
        self._closed = asyncio.Event()

    async def publish(self, envelope: Envelope) -> None:
        body = _enc.encode(envelope)
        await self.db.write(lambda c: c.execute(
            "INSERT INTO frames (at, body) VALUES (?, ?)", (time.time(), body)))

    async def subscribe(self) -> AsyncIterator[Envelope]:
        conn = connect(self.db.path)
        try:
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM frames").fetchone()
            position = int(row[0])
            next_prune = time.monotonic() + 10
            last_frame = time.monotonic()
            while not self._closed.is_set():
                rows = conn.execute("SELECT id, body FROM frames WHERE id > ? ORDER BY id "
                                    "LIMIT 1000", (position,)).fetchall()
                for frame_id, body in rows:
                    position = frame_id
                    yield _dec.decode(body)
                if time.monotonic() > next_prune:
                    next_prune = time.monotonic() + 10
                    await self._prune()
                now = time.monotonic()
                if rows:
                    last_frame = now
                    await asyncio.sleep(BUSY_POLL_S)
                else:
                    quiet = now - last_frame > QUIET_AFTER_S
                    await asyncio.sleep(IDLE_POLL_S if quiet else ACTIVE_POLL_S)
        finally:
            conn.close()

    async def _prune(self) -> None:
        cutoff = time.time() - RETENTION_S
        await self.db.write(lambda c: c.execute("DELETE FROM frames WHERE at < ?", (cutoff,)))

    async def close(self) -> None:
        self._closed.set()
        await self.db.close()
