"""A SQLite file shared by processes: group-committed writes, reads off the event loop.

Writes are closures ``fn(conn) -> T`` queued to one writer thread, which runs everything
queued so far in one transaction (each closure in its own savepoint, so one failure does not
undo the others) and resolves the callers' futures after COMMIT. Python's sqlite3 releases
the GIL while SQLite works, so waiting for another process's lock never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from chatcluster.domain.errors import Unavailable

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]

# 30 s: long enough to ride out another process's checkpoint, short enough to surface a stuck
# lock as "unavailable" rather than a hang.
BUSY_TIMEOUT_MS = 30_000
MAX_BATCH = 512


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    sync = "FULL" if os.environ.get("CHAT_SQLITE_FSYNC") == "1" else "NORMAL"
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


class Database:
    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        setup = connect(path)
        setup.executescript(schema)  # idempotent (IF NOT EXISTS); serialized by SQLite's lock
        setup.close()
        self._queue: queue.SimpleQueue[tuple[Write, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._writer = threading.Thread(target=self._write_loop, name=f"sqlite-writer:{path.name}",
                                         daemon=True)
        self._writer.start()
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"sqlite:{path.name}")
        self._closed = False

    # -- writes --------------------------------------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise Unavailable("store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, fut))
        return await fut

    def _write_loop(self) -> None:
        conn = connect(self.path)
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection,
                   batch: list[tuple[Write, asyncio.Future[Any]]]) -> None:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                conn.execute("SAVEPOINT item")
                try:
                    results.append((fut, fn(conn), None))
                    conn.execute("RELEASE item")
                except Exception as exc:
                    conn.execute("ROLLBACK TO item")
                    conn.execute("RELEASE item")
                    results.append((fut, None, exc))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = Unavailable(f"store write failed: {exc}")
            results = [(fut, None, failure) for _, fut in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for entry in results:
            by_loop.setdefault(entry[0].get_loop(), []).append(entry)
        for loop, entries in by_loop.items():
            # RuntimeError: the loop closed while we wrote, so nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, entries)

    # -- reads ---------------------------------------------------------------------------------
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise Unavailable("store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, fn)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise Unavailable(f"store read failed: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        self._readers.shutdown(wait=True)


def _resolve(entries: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in entries:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)


def app_page_filter(app_id: str, status: str | None, bound: tuple[str, str] | None,
                    direction: str) -> tuple[str, list[str]]:
    """``WHERE`` clause and arguments for one page of an app's rows, of one ``status`` if
    given, past a ``(created_at, id)`` keyset ``bound`` (``direction`` ``">"`` going forward in
    time, ``"<"`` going back)."""
    assert direction in (">", "<")
    where, args = "app_id=?", [app_id]
    if status is not None:
        where += " AND status=?"
        args.append(status)
    if bound is not None:
        where += f" AND (created_at, id) {direction} (?, ?)"
        args += [bound[0], bound[1]]
    return where, args
