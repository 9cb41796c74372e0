"""One process per service: what ``chatcluster up`` starts and what a container runs."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
from pathlib import Path

import uvicorn

from chatcluster.cli.wiring import (
    BackendUrls,
    Credentials,
    open_admin_store,
    open_backends,
    open_moderation_store,
    open_rate_limiter,
    open_usage_store,
    open_webhook_store,
    socket_urls_watch,
    token_issuer,
)
from chatcluster.gateway.admin import flags as flag_routes
from chatcluster.gateway.admin import moderation as moderation_routes
from chatcluster.gateway.admin import usage as usage_routes
from chatcluster.gateway.admin import users as user_routes
from chatcluster.gateway.admin import webhooks as webhook_routes
from chatcluster.gateway.admin.auth import Auditor
from chatcluster.gateway.app import create_gateway, live_socket_urls
from chatcluster.gateway.signin import SignInCache
from chatcluster.observability import serve_probes, setup_logging
from chatcluster.pipeline import retention
from chatcluster.pipeline.runner import Pipeline
from chatcluster.quotas import Quotas
from chatcluster.removal import MessageRemoval
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
    moderation = open_moderation_store(state_dir, urls)
    settings_store = open_admin_store(state_dir, urls)
    limiter = open_rate_limiter(state_dir, urls)
    replica = SocketReplica(settings, store=backends.store, sequencer=backends.sequencer,
                            bus=backends.bus, fanout=backends.fanout,
                            registry=backends.registry, tokens=token_issuer(creds),
                            membership=backends.membership, moderation=moderation,
                            quotas=Quotas(limiter, settings_store))
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
        await moderation.close()
        await settings_store.close()
        await limiter.close()
        log.info("socket replica stopped")


async def run_gateway(state_dir: Path, urls: BackendUrls, host: str, port: int,
                      url_file: Path | None, log_level: str) -> None:
    setup_logging("gateway", log_level)
    die_with_parent()
    creds = Credentials.load(state_dir)
    backends = open_backends(state_dir, urls)
    admin_store = open_admin_store(state_dir, urls)
    webhook_store = open_webhook_store(state_dir, urls)
    usage_store = open_usage_store(state_dir, urls)
    auditor = Auditor(admin_store)
    count_token = usage_routes.TokenCounter(usage_store)
    moderation = open_moderation_store(state_dir, urls)
    limiter = open_rate_limiter(state_dir, urls)
    removal = MessageRemoval(store=backends.store, sequencer=backends.sequencer,
                             bus=backends.bus, fanout=backends.fanout, origin="gateway")
    url_watch = socket_urls_watch()
    if url_watch is not None:
        await url_watch.start()
    signin = SignInCache(backends.store, moderation, functools.partial(
        live_socket_urls, backends.registry, url_watch.current if url_watch else None))
    admin_routers = [
        lambda authorize: user_routes.build_router(
            authorize=authorize, store=backends.store, moderation=moderation,
            fanout=backends.fanout, removal=removal, auditor=auditor),
        lambda authorize: moderation_routes.build_router(
            authorize=authorize, store=backends.store, moderation=moderation,
            fanout=backends.fanout, sequencer=backends.sequencer, removal=removal,
            auditor=auditor, on_change=signin.forget_moderation),
        lambda authorize: flag_routes.build_router(
            authorize=authorize, store=backends.store, moderation=moderation,
            sequencer=backends.sequencer, removal=removal, auditor=auditor),
        lambda authorize: webhook_routes.build_router(
            authorize=authorize, store=webhook_store, apps=backends.store, auditor=auditor),
        lambda authorize: usage_routes.build_router(
            authorize=authorize, store=usage_store, apps=backends.store),
    ]
    configured = os.environ.get("CHAT_ADMIN_TOKEN")

    def keep_root_token(token: str) -> None:  # a Secret (CHAT_ADMIN_TOKEN) is not ours to edit
        if not configured:
            Credentials.save_admin_token(state_dir, token)

    app = create_gateway(store=backends.store, registry=backends.registry,
                         fanout=backends.fanout, tokens=token_issuer(creds),
                         admin_token=configured or creds.admin_token, admin_store=admin_store,
                         on_root_rotated=keep_root_token, admin_routers=admin_routers,
                         on_token_issued=count_token, moderation=moderation,
                         quotas=Quotas(limiter, admin_store), signin=signin)
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
        await admin_store.close()
        await moderation.close()
        await limiter.close()
        await count_token.drain()
        await webhook_store.close()
        await usage_store.close()
        if url_watch is not None:
            await url_watch.close()
        log.info("gateway stopped")


async def run_consumers(state_dir: Path, urls: BackendUrls, host: str, port: int,
                        url_file: Path | None, log_level: str) -> None:
    setup_logging("consumers", log_level)
    die_with_parent()
    backends = open_backends(state_dir, urls)
    webhook_store = open_webhook_store(state_dir, urls)
    usage_store = open_usage_store(state_dir, urls)
    pipeline = Pipeline(bus=backends.bus, store=backends.store, fanout=backends.fanout,
                        webhook_store=webhook_store, usage_store=usage_store,
                        registry=backends.registry)
    moderation = open_moderation_store(state_dir, urls)
    admin_store = open_admin_store(state_dir, urls)
    retention_job = retention.RetentionJob(
        store=backends.store, moderation=moderation, admin=admin_store,
        removal=MessageRemoval(store=backends.store, sequencer=backends.sequencer,
                               bus=backends.bus, fanout=backends.fanout, origin="retention"),
        metrics=retention.RetentionMetrics(pipeline.metrics.registry),
        interval_s=float(os.environ.get("CHAT_RETENTION_INTERVAL_S") or retention.INTERVAL_S),
        day_s=float(os.environ.get("CHAT_RETENTION_DAY_S") or retention.DAY_S))

    async def ready() -> bool:
        try:
            await backends.store.ping()
        except Exception:
            return False
        return pipeline.healthy

    probes = await serve_probes(host, port, ready, pipeline.metrics.registry)
    write_url(url_file, f"http://{host}:{probes.sockets[0].getsockname()[1]}")
    log.info("consumers running")
    stop = stop_event()
    try:
        await asyncio.gather(pipeline.run(stop), retention_job.run(stop))
    finally:
        probes.close()
        await backends.close()
        await moderation.close()
        await admin_store.close()
        await webhook_store.close()
        await usage_store.close()
        log.info("consumers stopped")
