"""The Kafka adapters in the contract suites; the namespace becomes a topic and group prefix.

Needs a broker: ``eval "$(scripts/services up)"`` exports CHAT_BUS_URL=kafka://127.0.0.1:19092.
Every namespace gets its own topics (``t<ns>.message.sent``...) and consumer groups, so tests
never see each other's records on the shared broker; the topics are deleted when the test
process exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os

from aiokafka.admin import AIOKafkaAdminClient

from chatcluster.adapters.kafka.bus import KafkaBus, bootstrap_servers

_prefixes: set[str] = set()


def url() -> str:
    return os.environ.get("CHAT_BUS_URL", "")


def available() -> bool:
    return url().startswith("kafka://")


async def open_bus(namespace: str) -> KafkaBus:
    prefix = f"t{namespace}."
    _prefixes.add(prefix)
    bus = KafkaBus(url(), topic_prefix=prefix, group_prefix=prefix)
    await bus.start()
    return bus


async def delete_topics(servers: list[str], prefixes: set[str]) -> None:
    """Delete the topics of these prefixes (only this process's own namespaces)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics() if any(t.startswith(p) for p in prefixes)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@atexit.register
def _cleanup() -> None:
    # Each test namespace creates 5 topics x 8 partitions on a broker other engineers share.
    if _prefixes and available():
        with contextlib.suppress(Exception):
            asyncio.run(delete_topics(bootstrap_servers(url()), _prefixes))


PORTS = {"bus": open_bus}
