"""Shared by the webhook and usage tests: a cluster whose consumers retry in fractions of a
second and may call loopback, a real HTTP receiver on loopback with scripted answers, and admin
calls."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.chatclient import (
    Cluster,
    embedded_env,
    forget_cluster,
    production_env,
    start_cluster,
)
from tests.integration.conftest import _backends

# Three tries 0.2 s, then 0.4 s apart (capped at 1.5 s), 1 s per try; samples every 0.3 s.
FAST = {"CHAT_WEBHOOKS_ALLOW_PRIVATE": "1", "CHAT_WEBHOOKS_MAX_ATTEMPTS": "3",
        "CHAT_WEBHOOKS_RETRY_BASE_S": "0.2", "CHAT_WEBHOOKS_RETRY_MAX_S": "1.5",
        "CHAT_WEBHOOKS_TIMEOUT_S": "1", "CHAT_WEBHOOKS_POLL_S": "0.05",
        "CHAT_USAGE_SAMPLE_S": "0.3"}


@pytest.fixture(scope="session", params=_backends())
def hooks_cluster(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = production_env("wh") if request.param == "production" else embedded_env()
    running = start_cluster(tmp_path_factory.mktemp(f"hooks-{request.param}") / "state",
                            env={**env, **FAST})
    yield running
    running.stop()
    if request.param == "production":
        asyncio.run(forget_cluster(env))


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1. ``script[path]`` lists the answers to give in turn
    (the last one repeats): an int status, ``("retry-after", s)`` for a 429, ``("sleep", s)``
    to stall then answer 200, or ``("redirect", path)`` for a 302."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[Any]] = field(default_factory=dict)

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        loop = asyncio.get_running_loop()
        self.hits.append(Hit(request.path, dict(request.headers), body, loop.time()))
        answers = self.script.get(request.path, [200])
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, int):
            return web.Response(status=answer, text="ok" if answer < 300 else "no")
        kind, value = answer
        if kind == "retry-after":
            return web.Response(status=429, headers={"Retry-After": str(value)})
        if kind == "sleep":
            await asyncio.sleep(value)
            return web.Response(status=200)
        if kind == "redirect":
            return web.Response(status=302, headers={"Location": f"{self.url}{value}"})
        raise AssertionError(answer)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    found.url = f"http://127.0.0.1:{port}"
    yield found
    await runner.cleanup()


class Admin:
    """Admin calls with the root token against one app."""

    def __init__(self, cluster: Cluster, app_id: str, app_secret: str) -> None:
        self.cluster = cluster
        self.app_id = app_id
        self.app_secret = app_secret
        self.http = httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10, headers={
            "Authorization": f"Bearer {cluster.admin_token}"})

    def path(self, rest: str = "") -> str:
        return f"/api/v1/admin/apps/{self.app_id}{rest}"

    async def create_webhook(self, url: str, event_types: list[str]) -> dict[str, Any]:
        r = await self.http.post(self.path("/webhooks"), json={"url": url,
                                                                "event_types": event_types})
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def delivery(self, delivery_id: str) -> dict[str, Any]:
        r = await self.http.get(self.path(f"/webhooks/deliveries/{delivery_id}"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def close(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def admin(hooks_cluster: Cluster) -> AsyncIterator[Admin]:
    """A new app of ``hooks_cluster`` (tests never see each other's deliveries or usage)."""
    app_id, secret = await hooks_cluster.new_app("hooks")
    found = Admin(hooks_cluster, app_id, secret)
    yield found
    await found.close()


def consumers_pid(cluster: Cluster) -> int:
    """The ``chatcluster consumers`` child of this cluster's supervisor."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == cluster.process.pid and b"consumers" in cmdline:
            return int(entry)
    raise AssertionError("no consumers process")


def verification_recipe() -> Any:
    """The ``verify_signature`` of docs/webhooks.md, executed as written."""
    doc = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    namespace: dict[str, Any] = {}
    exec(blocks[0], namespace)  # the documented snippet, not a copy of it
    return namespace["verify_signature"]
