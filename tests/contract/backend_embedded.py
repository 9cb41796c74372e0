"""The embedded (SQLite) adapters in the contract suites; the namespace is a directory."""

from __future__ import annotations

from pathlib import Path

from chatcluster.adapters.embedded.bus import SqliteBus
from chatcluster.adapters.embedded.fanout import SqliteFanout
from chatcluster.adapters.embedded.registry import SqliteRegistry
from chatcluster.adapters.embedded.sequencer import SqliteSequencer
from chatcluster.adapters.embedded.store import SqliteStore

PORTS = {
    "store": lambda ns: SqliteStore(Path(ns)),
    "sequencer": lambda ns: SqliteSequencer(Path(ns)),
    "bus": lambda ns: SqliteBus(Path(ns)),
    "fanout": lambda ns: SqliteFanout(Path(ns)),
    "registry": lambda ns: SqliteRegistry(Path(ns)),
}


def available() -> bool:
    return True
