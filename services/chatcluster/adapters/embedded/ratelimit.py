"""RateLimiter on a SQLite file shared by the local processes.

Counters are not worth an fsync or a hop to a writer thread: this file has its own connection,
``synchronous=OFF``, and each ``acquire`` is one short ``BEGIN IMMEDIATE`` transaction run on
the event loop (tens of microseconds). Another process holding the lock longer than
``LOCK_WAIT_S`` makes it raise ``Unavailable`` rather than stall the loop. Old windows are
deleted as new ones start.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatcluster.domain.errors import Unavailable
from chatcluster.ports.ratelimit import Limit, window_end

LOCK_WAIT_S = 0.05
SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_windows (
    key TEXT NOT NULL, window INTEGER NOT NULL, hits INTEGER NOT NULL,
    PRIMARY KEY (key, window)
) WITHOUT ROWID;
"""


class SqliteRateLimiter:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(state_dir / "ratelimit.db", timeout=LOCK_WAIT_S,
                                    isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.executescript(SCHEMA)

    async def acquire(self, limits: list[Limit], now: float) -> float:
        if not limits:
            return 0.0
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                windows = [int(now // lim.window_s) for lim in limits]
                for lim, window in zip(limits, windows, strict=True):
                    row = c.execute("SELECT hits FROM rate_windows WHERE key=? AND window=?",
                                    (lim.key, window)).fetchone()
                    if row is not None and row[0] >= lim.limit:
                        c.execute("ROLLBACK")
                        return max(window_end(lim, now) - now, 0.001)
                for lim, window in zip(limits, windows, strict=True):
                    c.execute("INSERT INTO rate_windows (key, window, hits) VALUES (?,?,1) "
                              "ON CONFLICT (key, window) DO UPDATE SET hits = hits + 1",
                              (lim.key, window))
                    c.execute("DELETE FROM rate_windows WHERE key=? AND window<?",
                              (lim.key, window))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"rate limiter busy: {exc}") from exc
        return 0.0

    async def close(self) -> None:
        self.conn.close()
