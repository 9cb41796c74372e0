"""Production adapters on Apache Kafka (aiokafka).

``bus.KafkaBus`` implements the Bus port (``chatcluster.ports.bus``): one Kafka topic per
Bus topic, records keyed by conversation id so a conversation stays in one partition, an
idempotent ``acks=all`` producer, and consumer groups that commit only what the caller
committed. See ``docs/backends/kafka.md`` for the settings and what happens while the broker
is down.
"""
