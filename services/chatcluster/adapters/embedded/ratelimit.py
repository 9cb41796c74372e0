"""RateLimiter on a SQLite file shared by the local processes.

Counters are not worth an fsync or a hop to a writer thread: this file has its own connection,
``synchronous=OFF``, and each ``acquire`` is one short ``BEGIN IMMEDIATE`` transaction run on
the event loop (tens of microseconds). Another process holding the lock longer than
``LOCK_WAIT_S`` makes it raise ``Unavailable`` rather than stall the loop. Old windows are
swept every few seconds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatcluster.domain.errors import Unavailable
from chatcluster.ports.ratelimit import Limit, window_end

LOCK_WAIT_S = 0.05
SWEEP_EVERY_S = 10.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_windows (
    key TEXT NOT NULL, window INTEGER NOT NULL, hits INTEGER NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (key, window)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rate_windows_until ON rate_windows (until);
"""
# Counts the hit only while the window has room: no row comes back when it is full.
_TAKE = ("INSERT INTO rate_windows (key, window, hits, until) VALUES (?,?,1,?) "
         "ON CONFLICT (key, window) DO UPDATE SET hits = hits + 1 WHERE hits < ? "
         "RETURNING hits")


class SqliteRateLimiter:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(state_dir / "ratelimit.db", timeout=LOCK_WAIT_S,
                                    isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.executescript(SCHEMA)
        self._swept = 0.0

    async def acquire(self, limits: list[Limit], now: float) -> float:
        """One short transaction: one statement per limit, rolled back if any is full."""
        if not limits:
            return 0.0
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                for lim in limits:
                    end = window_end(lim, now)
                    taken = c.execute(_TAKE, (lim.key, int(now // lim.window_s), end,
                                              lim.limit)).fetchone()
                    if taken is None:
                        c.execute("ROLLBACK")
                        return max(end - now, 0.001)
                if now - self._swept > SWEEP_EVERY_S:  # windows that ended: a few rows
                    c.execute("DELETE FROM rate_windows WHERE until < ?", (now - 1.0,))
                    self._swept = now
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
