"""UsageStore on SQLite (``usage.db``): one row per counted key, one row per day's peak."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatcluster.ports.usage import COUNTED, DailyUsage, UsageKey

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_keys (
    app_id TEXT NOT NULL, day TEXT NOT NULL, metric TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (app_id, day, metric, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_peaks (
    app_id TEXT NOT NULL, day TEXT NOT NULL, connections INTEGER NOT NULL,
    PRIMARY KEY (app_id, day)) WITHOUT ROWID;
"""


class SqliteUsageStore:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "usage.db", SCHEMA)

    async def record(self, keys: list[UsageKey]) -> list[UsageKey]:
        if not keys:
            return []

        def w(c: sqlite3.Connection) -> list[UsageKey]:
            new = []
            for k in dict.fromkeys(keys):
                if c.execute("INSERT INTO usage_keys (app_id, day, metric, key) "
                             "VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                             (k.app_id, k.day, k.metric, k.key)).rowcount:
                    new.append(k)
            return new
        return await self.db.write(w)

    async def record_peak(self, app_id: str, day: str, connections: int) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO usage_peaks (app_id, day, connections) VALUES (?,?,?) "
            "ON CONFLICT DO UPDATE SET connections=MAX(connections, excluded.connections)",
            (app_id, day, connections)))

    async def daily(self, app_id: str, first_day: str, last_day: str) -> list[DailyUsage]:
        def q(c: sqlite3.Connection) -> list[DailyUsage]:
            days: dict[str, DailyUsage] = {}
            for day, metric, count in c.execute(
                    "SELECT day, metric, COUNT(*) FROM usage_keys WHERE app_id=? AND day>=? "
                    "AND day<=? GROUP BY day, metric", (app_id, first_day, last_day)):
                if metric in COUNTED:
                    setattr(days.setdefault(day, DailyUsage(day=day)), metric, count)
            for day, peak in c.execute(
                    "SELECT day, connections FROM usage_peaks WHERE app_id=? AND day>=? "
                    "AND day<=?", (app_id, first_day, last_day)):
                days.setdefault(day, DailyUsage(day=day)).peak_connections = peak
            return [days[d] for d in sorted(days)]
        return await self.db.read(q)

    async def ping(self) -> None:
        await self.db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self.db.close()
