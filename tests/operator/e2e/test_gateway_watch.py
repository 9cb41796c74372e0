"""The gateway's adapter (SocketUrlsWatch) in process against the real API server: it reads
the operator's ConfigMap through a watch, so a change is seen without a restart or a poll."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from chatcluster.adapters.kubernetes.socket_urls import SocketUrlsWatch
from tests.operator.e2e.conftest import kubectl


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_adapter_follows_the_configmap(namespace: str) -> None:
    def write(urls: list[str]) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "chat-socket-urls", "namespace": namespace},
                "data": {"socket_urls": json.dumps(urls)}}
        kubectl("apply", "-f", "-", input=json.dumps(body))

    write(["ws://chat-socket-0.x.svc"])
    watch = SocketUrlsWatch.from_setting(f"{namespace}/chat-socket-urls")
    await watch.start()
    try:
        await until(lambda: watch.current() == ["ws://chat-socket-0.x.svc"], 10, "first read")
        write(["ws://chat-socket-0.x.svc", "ws://chat-socket-1.x.svc"])
        await until(lambda: watch.current() == ["ws://chat-socket-0.x.svc",
                                                "ws://chat-socket-1.x.svc"], 5, "the update")
        kubectl("-n", namespace, "delete", "configmap", "chat-socket-urls")
        await until(lambda: watch.current() == [], 5, "the deletion")
        write(["ws://chat-socket-2.x.svc"])
        await until(lambda: watch.current() == ["ws://chat-socket-2.x.svc"], 5, "re-creation")
    finally:
        await watch.close()


async def test_adapter_starts_before_the_configmap_exists(namespace: str) -> None:
    watch = SocketUrlsWatch.from_setting(f"{namespace}/late-socket-urls")
    await watch.start()
    try:
        await until(lambda: watch.current() == [], 10, "an empty first read")
        kubectl("-n", namespace, "create", "configmap", "late-socket-urls",
                '--from-literal=socket_urls=["ws://late"]')
        await until(lambda: watch.current() == ["ws://late"], 5, "the new ConfigMap")
    finally:
        await watch.close()
