"""Bus on SQLite (``bus.db``): one log table in publishing order, offsets per consumer group.

The embedded bus has a single partition: its total order is stronger than the port asks.
One consumer process per group; a second one would process records twice, which the
idempotent consumers tolerate but which wastes work.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from pathlib import Path
from typing import Any

from chatcluster.ports.bus import Record

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT NOT NULL,
    value BLOB NOT NULL, at REAL NOT NULL);
-- A group reads only its topics: without this index a quiet group (acks) rescans every
-- other topic's records from its position on each poll.
CREATE INDEX IF NOT EXISTS log_by_topic ON log(topic, "offset");
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT PRIMARY KEY, committed INTEGER NOT NULL) WITHOUT ROWID;
"""

# Poll quickly while records flow, slowly when idle: the pipeline's lag bounds read-your-writes.
BUSY_POLL_S = 0.001
IDLE_POLL_S = 0.010
# Records every group has committed are deleted this often; the log stays small.
PRUNE_EVERY_S = 30.0


def _select(sql: str, args: tuple[object, ...], c: sqlite3.Connection) -> list[Any]:
    return c.execute(sql, args).fetchall()


def _prune(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT MIN(committed) FROM offsets").fetchone()
    if row[0] is None:
        return 0
    return int(c.execute('DELETE FROM log WHERE "offset" <= ?', (row[0],)).rowcount)


class SqliteBus:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "bus.db", SCHEMA)

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.db.write(lambda c: c.execute(
            'INSERT INTO log (topic, key, value, at) VALUES (?,?,?,?)',
            (topic, key, value, time.time())))

    def consumer(self, group: str, topics: tuple[str, ...]) -> SqliteBusConsumer:
        return SqliteBusConsumer(self.db, group, topics)

    async def close(self) -> None:
        await self.db.close()


class SqliteBusConsumer:
    def __init__(self, db: Database, group: str, topics: tuple[str, ...]) -> None:
        self.db = db
        self.group = group
        self.topics = topics
        self._position: int | None = None
        self._next_prune = time.monotonic() + PRUNE_EVERY_S

    async def _committed(self) -> int:
        row = await self.db.read(lambda c: c.execute(
            "SELECT committed FROM offsets WHERE grp=?", (self.group,)).fetchone())
        return 0 if row is None else int(row[0])

    async def poll(self, max_records: int, timeout: float) -> list[Record]:
        if self._position is None:
            self._position = await self._committed()
        marks = ",".join("?" * len(self.topics))
        sql = (f'SELECT "offset", topic, key, value FROM log WHERE topic IN ({marks}) '
               f'AND "offset" > ? ORDER BY "offset" LIMIT ?')
        deadline = time.monotonic() + timeout
        while True:
            args = (*self.topics, self._position, max_records)
            rows = await self.db.read(functools.partial(_select, sql, args))
            if rows:
                self._position = rows[-1][0]
                return [Record(r[1], r[2], r[3], 0, r[0]) for r in rows]
            if time.monotonic() >= deadline:
                return []
            await asyncio.sleep(IDLE_POLL_S if timeout > BUSY_POLL_S else BUSY_POLL_S)

    async def commit(self, records: list[Record]) -> None:
        if not records:
            return
        last = max(r.offset for r in records)
        await self.db.write(lambda c: c.execute(
            "INSERT INTO offsets (grp, committed) VALUES (?,?) ON CONFLICT (grp) DO UPDATE "
            "SET committed=MAX(committed, excluded.committed)", (self.group, last)))
        if time.monotonic() > self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            await self.db.write(_prune)

    async def lag(self) -> int:
        committed = await self._committed()
        marks = ",".join("?" * len(self.topics))
        row = await self.db.read(lambda c: c.execute(
            f'SELECT COUNT(*) FROM log WHERE "offset" > ? AND topic IN ({marks})',
            (committed, *self.topics)).fetchone())
        return int(row[0])

    async def rewind(self) -> None:
        self._position = None

    async def close(self) -> None:
        self._position = None
