"""``chatcluster up``: a whole cluster on this machine (PROTOCOL.md §3).

The supervisor starts the gateway, N socket replicas and the consumers as child processes in
its own process group (they also ask Linux to SIGTERM them if it dies), waits until the
gateway's token route would list all N replicas, prints the ready line, restarts a child that
dies, and stops them all on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatcluster.auth.tokens import secret_digest
from chatcluster.cli.wiring import (
    BackendUrls,
    ConfigError,
    Credentials,
    open_registry,
    open_store,
)
from chatcluster.domain.ids import now_rfc3339
from chatcluster.domain.model import App
from chatcluster.gateway.app import live_socket_urls

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MAX_RESTART_BACKOFF_S = 30.0


def progress(message: str) -> None:
    print(f"chatcluster: {message}", file=sys.stderr, flush=True)


@dataclass
class Child:
    name: str
    args: list[str]
    url_file: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    history: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        port = self.port
        if self.url_file.exists():  # a restart keeps the port clients already know
            port = int(self.url_file.read_text().rsplit(":", 1)[1].split("/")[0])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatcluster", *self.args, "--port", str(port),
             "--url-file", str(self.url_file)], env=env, stdin=subprocess.DEVNULL)

    def url(self) -> str | None:
        return self.url_file.read_text() if self.url_file.exists() else None


async def _ensure_default_app(state_dir: Path, urls: BackendUrls, creds: Credentials) -> None:
    store = open_store(state_dir, urls)
    try:
        if await store.get_app(creds.app_id) is None:
            await store.create_app(App(id=creds.app_id, name="default",
                                       secret_digest=secret_digest(creds.app_secret),
                                       created_at=now_rfc3339()))
    finally:
        await store.close()


async def _live_urls(state_dir: Path, urls: BackendUrls) -> list[str]:
    registry = open_registry(state_dir, urls)
    try:
        return await live_socket_urls(registry)
    finally:
        await registry.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def up(*, state_dir: Path, urls: BackendUrls, replicas: int, host: str, port: int | None,
       as_json: bool, log_level: str) -> int:
    started = time.monotonic()
    urls.check()
    state_dir = state_dir.resolve()
    progress(f"state directory {state_dir}")
    creds = Credentials.load_or_create(state_dir)
    asyncio.run(_ensure_default_app(state_dir, urls, creds))
    run_dir = state_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob("*.url"):
        stale.unlink()

    common = ["--state-dir", str(state_dir), "--host", host, "--log-level", log_level]
    for flag, value in (("--store", urls.store), ("--bus", urls.bus), ("--cache", urls.cache)):
        if value:
            common += [flag, value]
    base = port or 0
    children = [Child("gateway", ["gateway", *common], run_dir / "gateway.url", base)]
    for i in range(1, replicas + 1):
        children.append(Child(f"socket-{i}", ["socket", "--replica-id", f"socket-{i}", *common],
                              run_dir / f"socket-{i}.url", base + i if base else 0))
    children.append(Child("consumers", ["consumers", *common], run_dir / "consumers.url",
                          base + replicas + 1 if base else 0))

    stopping = False

    def on_signal(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    env = {**os.environ, "CHAT_SUPERVISED": "1", "PYTHONUNBUFFERED": "1"}
    for child in children:
        progress(f"starting {child.name}")
        child.start(env)

    announced = False
    try:
        while not stopping:
            for child in children:
                assert child.process is not None
                code = child.process.poll()
                if code is None or stopping:
                    continue
                now = time.monotonic()
                if child.next_start == 0.0:
                    child.history = [t for t in child.history if now - t < 60] + [now]
                    backoff = min(MAX_RESTART_BACKOFF_S, 0.5 * 2 ** (len(child.history) - 1))
                    child.next_start = now + backoff
                    progress(f"{child.name} exited with {code}; restarting in {backoff:.1f} s")
                elif now >= child.next_start:
                    child.next_start = 0.0
                    child.restarts += 1
                    child.start(env)
            if not announced:
                if time.monotonic() - started > READY_TIMEOUT_S:
                    progress(f"not ready after {READY_TIMEOUT_S:.0f} s; stopping")
                    return 1
                gateway_url = children[0].url()
                mine = [c.url() for c in children[1:-1]]
                if gateway_url and all(mine) and children[-1].url() and _ready(gateway_url):
                    live = asyncio.run(_live_urls(state_dir, urls))
                    if set(mine) <= set(live):
                        announced = True
                        _announce(as_json, gateway_url, [u for u in live if u in mine], creds)
                        progress(f"ready in {time.monotonic() - started:.1f} s "
                                 f"({replicas} socket replicas); Ctrl-C stops")
            time.sleep(0.1)
        return 0
    finally:
        _stop(children)


def _announce(as_json: bool, gateway_url: str, socket_urls: list[str],
              creds: Credentials) -> None:
    line = {"event": "ready", "gateway_url": gateway_url, "socket_urls": socket_urls,
            "app_id": creds.app_id, "app_secret": creds.app_secret,
            "admin_token": creds.admin_token}
    if as_json:
        print(json.dumps(line), flush=True)
        return
    print(f"""chatcluster is running.
  gateway      {gateway_url}   (OpenAPI: {gateway_url}/docs)
  sockets      {' '.join(socket_urls)}
  app_id       {creds.app_id}
  app_secret   {creds.app_secret}
  admin_token  {creds.admin_token}
Sign a user in:
  curl -s {gateway_url}/api/v1/auth/sdk/token -H 'content-type: application/json' \\
    -d '{{"app_id": "{creds.app_id}", "app_secret": "{creds.app_secret}", \\
         "user_external_id": "alice"}}'""", flush=True)


def _stop(children: list[Child]) -> None:
    progress("stopping")
    for child in children:
        if child.process is not None and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            progress(f"{child.name} did not stop in time; killing it")
            child.process.kill()
            child.process.wait()
    progress("stopped")


def run(args: Any) -> int:
    try:
        return up(state_dir=Path(args.state_dir), replicas=args.socket_replicas,
                  urls=BackendUrls.resolve(args.store, args.bus, args.cache), host=args.host,
                  port=args.port, as_json=args.json, log_level=args.log_level)
    except ConfigError as exc:
        progress(f"error: {exc}")
        return 2
