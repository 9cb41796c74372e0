"""Backend selection by URL (``chatcluster.cli.wiring``): what users type in flags and env."""

from __future__ import annotations

import pytest

from chatcluster.adapters.kafka.bus import bootstrap_servers
from chatcluster.cli.wiring import BackendUrls, ConfigError, kafka_partitions


def test_embedded_is_the_default_and_known_schemes_pass() -> None:
    BackendUrls().check()
    BackendUrls(store="mongodb://h:1/db", bus="kafka://h:2", cache="redis://h:3/0").check()
    BackendUrls(store="embedded", bus="embedded", cache="embedded").check()


@pytest.mark.parametrize(("field", "url"), [("store", "postgres://h/db"), ("bus", "redis://h"),
                                            ("cache", "kafka://h:1")])
def test_a_url_of_the_wrong_kind_is_refused_naming_the_flag(field: str, url: str) -> None:
    with pytest.raises(ConfigError, match=f"--{field}"):
        BackendUrls(**{field: url}).check()


def test_the_namespace_prefixes_keys_and_topics() -> None:
    assert BackendUrls().key_prefix == "chat:" and BackendUrls().topic_prefix == ""
    ns = BackendUrls(namespace="blue")
    assert ns.key_prefix == "chat:blue:" and ns.topic_prefix == "blue."


def test_kafka_partitions_come_from_the_url() -> None:
    assert kafka_partitions("kafka://h:1") == 8
    assert kafka_partitions("kafka://h:1?partitions=3") == 3
    assert bootstrap_servers("kafka://a:1,b:2?partitions=3") == ["a:1", "b:2"]
    for bad in ("kafka://h:1?partitions=0", "kafka://h:1?partitions=x"):
        with pytest.raises(ConfigError, match="partitions"):
            kafka_partitions(bad)
