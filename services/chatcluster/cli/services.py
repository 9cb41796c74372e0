"""One process per service: what ``chatcluster up`` starts and what a container runs."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from pathlib import Path

import uvicorn

from chatcluster.cli.wiring import BackendUrls, Credentials, open_backends, token_issuer
from chatcluster.gateway.app import create_gateway
from chatcluster.observability import serve_probes, setup_logging
from chatcluster.pipeline.runner import Pipeline
from chatcluster.socket.server import SocketReplica, SocketSettings

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM us when ``chatcluster up`` dies, even by ``kill -9``."""
    if os.environ.get("CHAT_SUPERVISED") != "1":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def write_url(path: Path | None, url: str) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(url)
    tmp.replace(path)


async def run_socket(state_dir: Path, urls: BackendUrls, settings: SocketSettings,
                     log_level: str, url_file: Path | None) -> None:
    setup_logging(f"socket:{settings.replica_id}", log_level)
    die_with_parent()
    creds = Credentials.load(state_dir)
    backends = open_backends(state_dir, urls)
    replica = SocketReplica(settings, store=backends.store, sequencer=backends.sequencer,
                            bus=backends.bus, fanout=backends.fanout,
                            registry=backends.registry, tokens=token_issuer(creds),
                            membership=backends.membership)
    stop = stop_event()
    runner = asyncio.create_task(replica.run(stop))
    try:
        ready = asyncio.create_task(replica.ready.wait())
        await asyncio.wait([runner, ready], return_when=asyncio.FIRST_COMPLETED)
        if replica.ready.is_set():
            write_url(url_file, replica.url)
        await runner
    finally:
        ready.cancel()
        await backends.close()
        log.info("socket replica stopped")


async def run_gateway(state_dir: Path, urls: BackendUrls, host: str, port: int,
                      url_file: Path | None, log_level: str) -> None:
    setup_logging("gateway", log_level)
    die_with_parent()
    creds = Credentials.load(state_dir)
    backends = open_backends(state_dir, urls)
    app = create_gateway(store=backends.store, registry=backends.registry,
                         fanout=backends.fanout, tokens=token_issuer(creds),
                         admin_token=os.environ.get("CHAT_ADMIN_TOKEN") or creds.admin_token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    url = f"http://{host}:{sock.getsockname()[1]}"
    log.info("gateway listening", extra={"fields": {"url": url}})
    write_url(url_file, url)
    try:
        await server.serve(sockets=[sock])
    finally:
        await backends.close()
        log.info("gateway stopped")


async def run_consumers(state_dir: Path, urls: BackendUrls, host: str, port: int,
                        url_file: Path | None, log_level: str) -> None:
    setup_logging("consumers", log_level)
    die_with_parent()
    backends = open_backends(state_dir, urls)
    pipeline = Pipeline(bus=backends.bus, store=backends.store, fanout=backends.fanout)

    async def ready() -> bool:
        try:
            await backends.store.ping()
        except Exception:
            return False
        return pipeline.healthy

    probes = await serve_probes(host, port, ready, pipeline.metrics.registry)
    write_url(url_file, f"http://{host}:{probes.sockets[0].getsockname()[1]}")
    log.info("consumers running")
    try:
        await pipeline.run(stop_event())
    finally:
        probes.close()
        await backends.close()
        log.info("consumers stopped")
