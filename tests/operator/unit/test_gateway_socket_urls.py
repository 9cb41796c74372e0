"""The gateway's side of URL injection, without a cluster: the operator's list is the set of
socket_urls and the registry only orders it; the ConfigMap's JSON is read defensively."""

from __future__ import annotations

from chatcluster.adapters.kubernetes.socket_urls import SocketUrlsWatch, parse_socket_urls
from chatcluster.gateway.app import live_socket_urls
from chatcluster.ports.registry import ReplicaInfo


class FakeRegistry:
    def __init__(self, replicas: list[ReplicaInfo]) -> None:
        self.replicas = replicas

    async def live_replicas(self, max_age: float) -> list[ReplicaInfo]:
        return self.replicas


def replica(url: str, connections: int, draining: bool = False) -> ReplicaInfo:
    return ReplicaInfo(replica_id=url, url=url, connections=connections, heartbeat_at=0.0,
                       draining=draining)


async def test_operator_list_is_the_set_registry_orders_it() -> None:
    registry = FakeRegistry([replica("ws://b", 5), replica("ws://a", 9),
                             replica("ws://gone", 0), replica("ws://d", 0, draining=True),
                             replica("ws://c", 1)])
    given = ["ws://a", "ws://new", "ws://b", "ws://c", "ws://d"]
    urls = await live_socket_urls(registry, lambda: given)  # type: ignore[arg-type]
    # known: least loaded first, draining last among them; unknown after, in given order;
    # a replica the operator does not list (ws://gone) is never offered.
    assert urls == ["ws://c", "ws://b", "ws://a", "ws://d", "ws://new"]


async def test_registry_alone_until_the_list_was_read() -> None:
    registry = FakeRegistry([replica("ws://b", 5), replica("ws://a", 1)])
    assert await live_socket_urls(registry, lambda: None) == ["ws://a", "ws://b"]  # type: ignore[arg-type]
    assert await live_socket_urls(registry) == ["ws://a", "ws://b"]  # type: ignore[arg-type]


def test_configmap_parsing_is_defensive() -> None:
    assert parse_socket_urls({"data": {"socket_urls": '["ws://a", 3, "ws://b"]'}}) == [
        "ws://a", "ws://b"]
    assert parse_socket_urls({"data": {"socket_urls": "not json"}}) == []
    assert parse_socket_urls({"data": {"socket_urls": '{"a": 1}'}}) == []
    assert parse_socket_urls({}) == []
    assert parse_socket_urls(None) == []


def test_setting_is_namespace_slash_name() -> None:
    watch = SocketUrlsWatch.from_setting("team-a/chat-socket-urls")
    assert (watch.namespace, watch.name) == ("team-a", "chat-socket-urls")
    assert watch.current() is None
    for bad in ("nonamespace", "/x", "x/"):
        try:
            SocketUrlsWatch.from_setting(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
