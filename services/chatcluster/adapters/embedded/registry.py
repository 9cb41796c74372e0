"""Registry on SQLite (``registry.db``): replicas' heartbeats and per-replica presence counts."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from chatcluster.ports.registry import PresenceInfo, ReplicaInfo

from .database import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY, url TEXT NOT NULL, connections INTEGER NOT NULL,
    heartbeat_at REAL NOT NULL, draining INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS presence (
    app_id TEXT NOT NULL, user_id TEXT NOT NULL, replica_id TEXT NOT NULL,
    connections INTEGER NOT NULL, PRIMARY KEY (app_id, user_id, replica_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS announced (
    app_id TEXT NOT NULL, user_id TEXT NOT NULL, at REAL NOT NULL, online INTEGER NOT NULL,
    PRIMARY KEY (app_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_seen (
    app_id TEXT NOT NULL, user_id TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (app_id, user_id)) WITHOUT ROWID;
"""


class SqliteRegistry:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "registry.db", SCHEMA)

    async def heartbeat(self, replica: ReplicaInfo) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO replicas (id, url, connections, heartbeat_at, draining) "
            "VALUES (?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET url=excluded.url, "
            "connections=excluded.connections, heartbeat_at=excluded.heartbeat_at, "
            "draining=excluded.draining",
            (replica.replica_id, replica.url, replica.connections, replica.heartbeat_at,
             int(replica.draining))))

    async def remove(self, replica_id: str) -> None:
        def w(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM replicas WHERE id=?", (replica_id,))
            c.execute("DELETE FROM presence WHERE replica_id=?", (replica_id,))
        await self.db.write(w)

    async def live_replicas(self, max_age: float) -> list[ReplicaInfo]:
        cutoff = time.time() - max_age
        rows = await self.db.read(lambda c: c.execute(
            "SELECT id, url, connections, heartbeat_at, draining FROM replicas "
            "WHERE heartbeat_at >= ?", (cutoff,)).fetchall())
        return [ReplicaInfo(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    async def set_connections(self, app_id: str, user_id: str, replica_id: str,
                              connections: int, now: str) -> None:
        def w(c: sqlite3.Connection) -> None:
            if connections > 0:
                c.execute("INSERT INTO presence (app_id, user_id, replica_id, connections) "
                          "VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET "
                          "connections=excluded.connections",
                          (app_id, user_id, replica_id, connections))
                return
            c.execute("DELETE FROM presence WHERE app_id=? AND user_id=? AND replica_id=?",
                      (app_id, user_id, replica_id))
            c.execute("INSERT INTO last_seen (app_id, user_id, at) VALUES (?,?,?) "
                      "ON CONFLICT DO UPDATE SET at=excluded.at", (app_id, user_id, now))
        await self.db.write(w)

    async def presence(self, app_id: str, user_ids: list[str],
                       max_age: float) -> dict[str, PresenceInfo]:
        if not user_ids:
            return {}
        cutoff = time.time() - max_age
        marks = ",".join("?" * len(user_ids))

        def q(c: sqlite3.Connection) -> dict[str, PresenceInfo]:
            online = {r[0] for r in c.execute(
                f"SELECT DISTINCT p.user_id FROM presence p JOIN replicas r ON r.id=p.replica_id "
                f"WHERE p.app_id=? AND p.user_id IN ({marks}) AND p.connections>0 "
                f"AND r.heartbeat_at>=?", (app_id, *user_ids, cutoff))}
            seen = dict(c.execute(f"SELECT user_id, at FROM last_seen WHERE app_id=? "
                                  f"AND user_id IN ({marks})", (app_id, *user_ids)).fetchall())
            return {u: PresenceInfo(online=u in online, last_seen=None if u in online
                                    else seen.get(u)) for u in user_ids}
        return await self.db.read(q)

    async def connections_by_app(self, max_age: float) -> dict[str, int]:
        cutoff = time.time() - max_age
        rows = await self.db.read(lambda c: c.execute(
            "SELECT p.app_id, SUM(p.connections) FROM presence p JOIN replicas r "
            "ON r.id=p.replica_id WHERE r.heartbeat_at>=? AND p.connections>0 "
            "GROUP BY p.app_id", (cutoff,)).fetchall())
        return {r[0]: int(r[1]) for r in rows}

    async def claim_announcement(self, app_id: str, user_id: str, online: bool, now: float,
                                 min_interval: float) -> float:
        def w(c: sqlite3.Connection) -> float:
            row = c.execute("SELECT at, online FROM announced WHERE app_id=? AND user_id=?",
                            (app_id, user_id)).fetchone()
            if row is not None and bool(row[1]) == online:
                return -1.0
            if row is not None and now - row[0] < min_interval:
                return float(row[0] + min_interval - now)
            c.execute("INSERT INTO announced (app_id, user_id, at, online) VALUES (?,?,?,?) "
                      "ON CONFLICT DO UPDATE SET at=excluded.at, online=excluded.online",
                      (app_id, user_id, now, int(online)))
            return 0.0
        return await self.db.write(w)

    async def close(self) -> None:
        await self.db.close()
