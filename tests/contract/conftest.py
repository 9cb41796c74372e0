"""One contract suite per port, run against every adapter of that port.

An adapter joins by adding a factory to ``FACTORIES``: an async context manager that yields
a fresh, isolated instance (its own files, database or key prefix) and can be opened twice on
the same data (``reopen``) to check durability and sharing between processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chatcluster.adapters.embedded.bus import SqliteBus
from chatcluster.adapters.embedded.fanout import SqliteFanout
from chatcluster.adapters.embedded.registry import SqliteRegistry
from chatcluster.adapters.embedded.sequencer import SqliteSequencer
from chatcluster.adapters.embedded.store import SqliteStore


class Backend:
    """Opens instances of one adapter on one shared, isolated data location."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._open: list[Any] = []

    def open(self) -> Any:
        """Another instance on the same data: what a second process would see."""
        instance = self._opener()
        self._open.append(instance)
        return instance

    async def close(self) -> None:
        for instance in self._open:
            with contextlib.suppress(Exception):
                await instance.close()


EMBEDDED: dict[str, Callable[[Path], Callable[[], Any]]] = {
    "store": lambda d: lambda: SqliteStore(d),
    "sequencer": lambda d: lambda: SqliteSequencer(d),
    "bus": lambda d: lambda: SqliteBus(d),
    "fanout": lambda d: lambda: SqliteFanout(d),
    "registry": lambda d: lambda: SqliteRegistry(d),
}


def _backend_fixture(port: str) -> Any:
    @pytest.fixture(params=["embedded"])
    async def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
        backend = Backend(EMBEDDED[port](tmp_path))
        yield backend
        await backend.close()

    return fixture


store_backend = _backend_fixture("store")
sequencer_backend = _backend_fixture("sequencer")
bus_backend = _backend_fixture("bus")
fanout_backend = _backend_fixture("fanout")
registry_backend = _backend_fixture("registry")
