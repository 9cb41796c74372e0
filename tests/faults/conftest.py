"""Fault injection on the production backends of ``scripts/services up``.

These tests kill, stop and flush the real servers (Kafka, FerretDB, Redis) that every other
test run on this machine shares, so they need the exports of ``eval "$(scripts/services up)"``
and skip without them. Every test leaves every server running and healthy: the ``servers``
fixture resumes a stopped FerretDB and runs ``scripts/services up`` when the test ends,
whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "scripts" / "services"
REQUIRED = ("CHAT_STORE_URL", "CHAT_BUS_URL", "CHAT_CACHE_URL", "CHAT_SERVICES_DIR")
# pidfile (relative to CHAT_SERVICES_DIR) and a string its command line must contain.
PIDFILES = {"redis": ("redis/redis.pid", "redis-server"),
            "kafka": ("kafka/kafka.pid", "kafka.Kafka"),
            "ferretdb": ("ferretdb/ferretdb.pid", "ferretdb")}


@pytest.fixture(autouse=True)
def _real_servers_required() -> None:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.skip(f"fault tests need the real servers: {', '.join(missing)} not set "
                    f"(run: eval \"$(scripts/services up)\")")


class Servers:
    """The servers of ``scripts/services``: their pids, and ``up`` to (re)start them."""

    def __init__(self) -> None:
        self.dir = Path(os.environ["CHAT_SERVICES_DIR"])

    def pid(self, name: str) -> int:
        relative, marker = PIDFILES[name]
        pid = int((self.dir / relative).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert marker in cmdline, f"pid {pid} of {name} runs {cmdline!r}"
        return pid

    def signal(self, name: str, sig: int) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    async def up(self, timeout: float = 240) -> float:
        """``scripts/services up`` (restarts whatever is not running, waits until ready);
        returns how long it took."""
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(SERVICES), "up", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode == 0, f"scripts/services up failed:\n{err.decode()[-3000:]}"
        return time.monotonic() - started

    def status(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVICES), "status"], capture_output=True, text=True,
                              timeout=60, check=False, cwd=REPO)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    found = Servers()
    yield found
    # Whatever the test did or where it failed: resume a stopped FerretDB (a stopped process
    # still "runs" and its port still accepts connections, so `up` alone would not notice),
    # restart anything that is down, and insist that all three are healthy again.
    with contextlib.suppress(OSError, ValueError, AssertionError):
        found.signal("ferretdb", signal.SIGCONT)
    await found.up()
    status = found.status()
    assert status.returncode == 0, f"servers unhealthy after the test:\n{status.stdout}"


