"""Integration fixtures: one real cluster (``chatcluster up``: gateway, two socket replicas,
consumers, as separate processes) shared by the session, and a factory of signed-in clients."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chatclient import (
    Client,
    Cluster,
    embedded_env,
    forget_cluster,
    have_real_servers,
    production_env,
    start_cluster,
)

_users = itertools.count(1)


def _backends() -> list[str]:
    """Every integration test runs on the embedded backends and, when ``scripts/services up``
    exported their URLs, again on the production ones (MongoDB, Kafka, Redis)."""
    chosen = os.environ.get("CHAT_TEST_BACKENDS")
    if chosen:
        return chosen.split(",")
    return ["embedded", "production"] if have_real_servers() else ["embedded"]


@pytest.fixture(scope="session", params=_backends())
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = production_env("it") if request.param == "production" else embedded_env()
    running = start_cluster(tmp_path_factory.mktemp(request.param) / "state", env=env)
    yield running
    running.stop()
    if request.param == "production":  # its topics, database and keys on the shared servers
        asyncio.run(forget_cluster(env))


def unique(name: str) -> str:
    """User ids unique across the session, so tests sharing the cluster never collide."""
    return f"{name}-{next(_users)}"


Connect = Callable[..., Coroutine[Any, Any, Client]]


@pytest.fixture
async def connect(cluster: Cluster) -> AsyncIterator[Connect]:
    """``await connect("alice", replica=1)`` -> a signed-in Client on that replica."""
    opened: list[Client] = []

    async def _connect(user: str, replica: int = 0, *, target: Cluster | None = None,
                       via: str = "header", app: tuple[str, str] | None = None) -> Client:
        c = target or cluster
        tokens = await c.token(user, app_id=app[0] if app else None,
                               app_secret=app[1] if app else None)
        client = await Client.connect(c.socket_urls[replica % len(c.socket_urls)],
                                      tokens["access_token"], user, via=via)
        opened.append(client)
        return client

    yield _connect
    for client in opened:
        await client.close()


@pytest.fixture
def users() -> Callable[..., list[str]]:
    return lambda *names: [unique(n) for n in names]


def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state"
