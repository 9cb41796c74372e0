"""WebhookStore on SQLite (``webhooks.db``): endpoints, the delivery outbox, membership marks.

Claiming is one write transaction (select due rows, set their lease), so two dispatchers in
two processes never lease the same delivery.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from chatcluster.ports.webhooks import (
    AttemptResult,
    Delivery,
    DeliveryStatus,
    Endpoint,
    MembersMark,
)

from .database import Database, app_page_filter

SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, url TEXT NOT NULL, secret TEXT NOT NULL,
    event_types TEXT NOT NULL, enabled INTEGER NOT NULL, description TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS endpoints_by_app ON endpoints(app_id, created_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, app_id TEXT NOT NULL, endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL, event_type TEXT NOT NULL, body BLOB NOT NULL,
    created_at TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL, lease_until REAL NOT NULL, last_status INTEGER,
    last_error TEXT, finished_at TEXT);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_app ON deliveries(app_id, created_at, id);
CREATE TABLE IF NOT EXISTS member_marks (
    conversation_id TEXT PRIMARY KEY, version INTEGER NOT NULL, members TEXT NOT NULL);
"""

_ENDPOINT_COLS = "id, app_id, url, secret, event_types, enabled, description, created_at, " \
                 "updated_at"
_DELIVERY_COLS = ("id, app_id, endpoint_id, event_id, event_type, body, created_at, status, "
                  "attempts, next_attempt_at, lease_until, last_status, last_error, finished_at")


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(id=row[0], app_id=row[1], url=row[2], secret=row[3],
                    event_types=json.loads(row[4]), enabled=bool(row[5]), description=row[6],
                    created_at=row[7], updated_at=row[8])


def _delivery(row: Any) -> Delivery:
    return Delivery(id=row[0], app_id=row[1], endpoint_id=row[2], event_id=row[3],
                    event_type=row[4], body=bytes(row[5]), created_at=row[6], status=row[7],
                    attempts=row[8], next_attempt_at=row[9], lease_until=row[10],
                    last_status=row[11], last_error=row[12], finished_at=row[13])


class SqliteWebhookStore:
    def __init__(self, state_dir: Path) -> None:
        self.db = Database(state_dir / "webhooks.db", SCHEMA)

    # endpoints ------------------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> None:
        e = endpoint
        await self.db.write(lambda c: c.execute(
            f"INSERT INTO endpoints ({_ENDPOINT_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (e.id, e.app_id, e.url, e.secret, json.dumps(e.event_types), int(e.enabled),
             e.description, e.created_at, e.updated_at)))

    async def get_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None:
        row = await self.db.read(lambda c: c.execute(
            f"SELECT {_ENDPOINT_COLS} FROM endpoints WHERE app_id=? AND id=?",
            (app_id, endpoint_id)).fetchone())
        return None if row is None else _endpoint(row)

    async def list_endpoints(self, app_id: str) -> list[Endpoint]:
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT {_ENDPOINT_COLS} FROM endpoints WHERE app_id=? ORDER BY created_at, id",
            (app_id,)).fetchall())
        return [_endpoint(r) for r in rows]

    async def update_endpoint(self, endpoint: Endpoint) -> bool:
        e = endpoint

        def w(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE endpoints SET url=?, secret=?, event_types=?, enabled=?, description=?, "
                "updated_at=? WHERE app_id=? AND id=?",
                (e.url, e.secret, json.dumps(e.event_types), int(e.enabled), e.description,
                 e.updated_at, e.app_id, e.id))
            return cur.rowcount > 0
        return await self.db.write(w)

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> bool:
        def w(c: sqlite3.Connection) -> bool:
            return c.execute("DELETE FROM endpoints WHERE app_id=? AND id=?",
                             (app_id, endpoint_id)).rowcount > 0
        return await self.db.write(w)

    # outbox ---------------------------------------------------------------------------------
    async def enqueue(self, deliveries: list[Delivery]) -> int:
        if not deliveries:
            return 0

        def w(c: sqlite3.Connection) -> int:
            new = 0
            for d in deliveries:
                new += c.execute(
                    f"INSERT INTO deliveries ({_DELIVERY_COLS}) VALUES "
                    f"(?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
                    (d.id, d.app_id, d.endpoint_id, d.event_id, d.event_type, d.body,
                     d.created_at, d.status, d.attempts, d.next_attempt_at, d.lease_until,
                     d.last_status, d.last_error, d.finished_at)).rowcount
            return new
        return await self.db.write(w)

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Delivery]:
        def w(c: sqlite3.Connection) -> list[Delivery]:
            rows = c.execute(
                f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE status='pending' AND "
                f"next_attempt_at<=? AND lease_until<=? ORDER BY next_attempt_at LIMIT ?",
                (now, now, limit)).fetchall()
            c.executemany("UPDATE deliveries SET lease_until=? WHERE id=?",
                          [(lease_until, r[0]) for r in rows])
            claimed = [_delivery(r) for r in rows]
            for d in claimed:
                d.lease_until = lease_until
            return claimed
        return await self.db.write(w)

    async def record_attempt(self, delivery_id: str, result: AttemptResult) -> None:
        r = result
        await self.db.write(lambda c: c.execute(
            "UPDATE deliveries SET status=?, attempts=?, next_attempt_at=?, lease_until=0, "
            "last_status=?, last_error=?, finished_at=? WHERE id=?",
            (r.status, r.attempts, r.next_attempt_at, r.last_status, r.last_error,
             r.finished_at, delivery_id)))

    async def get_delivery(self, app_id: str, delivery_id: str) -> Delivery | None:
        row = await self.db.read(lambda c: c.execute(
            f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE app_id=? AND id=?",
            (app_id, delivery_id)).fetchone())
        return None if row is None else _delivery(row)

    async def list_deliveries(self, app_id: str, status: DeliveryStatus | None, limit: int,
                              before: tuple[str, str] | None) -> list[Delivery]:
        where, args = app_page_filter(app_id, status, before, "<")
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE {where} "
            f"ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit)).fetchall())
        return [_delivery(r) for r in rows]

    async def replay(self, app_id: str, delivery_id: str, now: float) -> Delivery | None:
        def w(c: sqlite3.Connection) -> Delivery | None:
            cur = c.execute(
                "UPDATE deliveries SET status='pending', attempts=0, next_attempt_at=?, "
                "lease_until=0, finished_at=NULL WHERE app_id=? AND id=? AND status='dead'",
                (now, app_id, delivery_id))
            if cur.rowcount == 0:
                return None
            row = c.execute(f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE id=?",
                            (delivery_id,)).fetchone()
            return _delivery(row)
        return await self.db.write(w)

    async def prune_finished(self, finished_before: str, limit: int) -> int:
        def w(c: sqlite3.Connection) -> int:
            return c.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE status IN "
                "('delivered', 'dead') AND finished_at < ? LIMIT ?)",
                (finished_before, limit)).rowcount
        return await self.db.write(w)

    # membership marks -----------------------------------------------------------------------
    async def members(self, conversation_id: str) -> MembersMark | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT version, members FROM member_marks WHERE conversation_id=?",
            (conversation_id,)).fetchone())
        return None if row is None else MembersMark(row[0], json.loads(row[1]))

    async def save_members(self, conversation_id: str, mark: MembersMark) -> None:
        await self.db.write(lambda c: c.execute(
            "INSERT INTO member_marks (conversation_id, version, members) VALUES (?,?,?) "
            "ON CONFLICT (conversation_id) DO UPDATE SET version=excluded.version, "
            "members=excluded.members WHERE excluded.version > member_marks.version",
            (conversation_id, mark.version, json.dumps(mark.members))))

    async def ping(self) -> None:
        await self.db.read(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await self.db.close()

