"""One contract suite per port, run against every adapter of that port.

Each backend contributes a module ``backend_<name>.py`` beside this file with::

    PORTS: dict[str, Opener]   # port name -> async opener(namespace) -> a new instance
    def available() -> bool    # its server is configured (scripts/services up exports URLs)

An opener called twice with one namespace gives two instances on the same data (what two
processes see), and different namespaces never see each other's data.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

Opener = Callable[[str], Any | Awaitable[Any]]
BACKENDS = ["embedded", "redis", "kafka", "mongodb"]


class Backend:
    """Opens instances of one adapter on one isolated namespace."""

    def __init__(self, name: str, opener: Opener, namespace: str) -> None:
        self.name = name
        self._opener = opener
        self._namespace = namespace
        self._open: list[Any] = []

    async def open(self) -> Any:
        """Another instance on the same data: what a second process would see."""
        instance = self._opener(self._namespace)
        if inspect.isawaitable(instance):
            instance = await instance
        self._open.append(instance)
        return instance

    async def close(self) -> None:
        for instance in reversed(self._open):
            with contextlib.suppress(Exception):
                await instance.close()


def _modules() -> dict[str, Any]:
    found = {}
    for name in BACKENDS:
        try:
            module = importlib.import_module(f"tests.contract.backend_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.contract.backend_{name}":
                raise
            continue
        if module.available():
            found[name] = module
    return found


MODULES = _modules()


def _backend_fixture(port: str) -> Any:
    names = [n for n, m in MODULES.items() if port in m.PORTS]

    @pytest.fixture(params=names)
    async def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
        module = MODULES[request.param]
        namespace = str(tmp_path) if request.param == "embedded" else uuid.uuid4().hex[:12]
        backend = Backend(request.param, module.PORTS[port], namespace)
        yield backend
        await backend.close()

    return fixture


store_backend = _backend_fixture("store")
sequencer_backend = _backend_fixture("sequencer")
bus_backend = _backend_fixture("bus")
fanout_backend = _backend_fixture("fanout")
registry_backend = _backend_fixture("registry")
admin_store_backend = _backend_fixture("admin")
webhook_store_backend = _backend_fixture("webhooks")
usage_store_backend = _backend_fixture("usage")
membership_backend = _backend_fixture("membership")
ratelimit_backend = _backend_fixture("ratelimit")
moderation_store_backend = _backend_fixture("moderation")
