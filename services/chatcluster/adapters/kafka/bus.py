"""Bus on Apache Kafka (aiokafka): one Kafka topic per Bus topic, keyed by conversation id.

Guarantees, and how Kafka provides them:

- Durable on return: ``publish`` returns only after the partition leader acknowledged the
  record with ``acks=all``, that is once every in-sync replica holds it. With a replication
  factor of 3 and ``min.insync.replicas=2`` (what ``start`` creates when the cluster has three
  brokers) an acknowledged record survives the loss of any one broker; on a single broker it
  survives ``kill -9`` of any process, the broker included (the page cache outlives the
  process), but not the loss of the machine.
- Ordered per key: the key (a conversation id) picks the partition (murmur2, like the Java
  clients), and a partition is a log read in order. ``publish`` waits for the
  acknowledgement, so one publisher's records of one key are appended in call order; the
  idempotent producer keeps that order across its internal retries and never writes a
  retried record twice.
- At-least-once per consumer group: offsets are committed only by ``commit`` (auto-commit is
  off), one past the highest committed record per partition. A consumer that stops for any
  reason (crash, rebalance, ``rewind``) resumes at the group's last commit, so anything it had
  polled but not committed is handed out again. Partitions are divided among the members of
  a group by Kafka's group protocol.
- Fails fast: ``publish`` raises ``Unavailable`` after at most ``publish_timeout`` seconds when
  the broker cannot be reached or refuses the record. Its outcome is then unknown: the record
  may still be appended later. Retrying is safe because consumers write idempotently.
- A partial outage never crashes a consumer: ``poll`` honours its timeout even while the
  consumer is still joining its group (the join runs in the background across polls),
  ``rewind`` never raises, and errors surface as ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ConsumerStoppedError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from chatcluster.domain.errors import Unavailable
from chatcluster.ports.bus import TOPICS, Record

log = logging.getLogger(__name__)

SCHEME = "kafka://"
CLIENT_ID = "chatcluster"
# A request fails with Unavailable after this long instead of hanging while the broker is
# down: the socket service then answers "unavailable" (never "ok" for an unstored message).
PUBLISH_TIMEOUT_S = 5.0
# Linger 0: publish waits for the acknowledgement anyway, so lingering would add its full
# length to every publish. Concurrent publishes still share requests: records accumulate
# while the previous produce request of their partition is in flight.
LINGER_MS = 0
# Kafka's defaults (10 s session, 3 s heartbeat): a crashed member's partitions move to the
# others after at most this long; the broker refuses less than 6 s by default.
SESSION_TIMEOUT_MS = 10_000
# Replicas per partition on a large enough cluster, and how many must hold a record before
# acks=all acknowledges it.
MAX_REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://host:port[,host:port...]`` -> the bootstrap list; ValueError otherwise."""
    if not url.startswith(SCHEME):
        raise ValueError(f"not a Kafka URL (kafka://host:port[,host:port]): {url!r}")
    netloc = url[len(SCHEME):].split("/", 1)[0].split("?", 1)[0]
    hosts = [h.strip() for h in netloc.split(",") if h.strip()]
    if not hosts:
        raise ValueError(f"no bootstrap server in {url!r}")
    return hosts


class KafkaBus:
    """The Bus port on Kafka. ``start`` is optional: ``publish`` and consumers start it."""

    def __init__(self, url: str, *, topic_prefix: str = "", group_prefix: str = "",
                 partitions: int = 8, linger_ms: int = LINGER_MS,
                 publish_timeout: float = PUBLISH_TIMEOUT_S,
                 replication_factor: int | None = None,
                 session_timeout_ms: int = SESSION_TIMEOUT_MS) -> None:
        self.servers = bootstrap_servers(url)
        self.topic_prefix = topic_prefix
        self.group_prefix = group_prefix
        self.partitions = partitions
        self.linger_ms = linger_ms
        self.publish_timeout = publish_timeout
        self.replication_factor = replication_factor
        self.session_timeout_ms = session_timeout_ms
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._consumers: set[KafkaBusConsumer] = set()
        self._closed = False

    def topic_name(self, topic: str) -> str:
        return self.topic_prefix + topic

    def bus_topic(self, name: str) -> str:
        return name[len(self.topic_prefix):] if name.startswith(self.topic_prefix) else name

    @property
    def request_timeout_ms(self) -> int:
        return max(1000, int(self.publish_timeout * 1000))

    async def start(self) -> None:
        """Create the topics (if missing) and start the producer. Idempotent; raises
        ``Unavailable`` within ``publish_timeout`` when the cluster cannot be reached."""
        await self._started_producer()

    async def _started_producer(self) -> Any:
        async with self._lock:
            if self._closed:
                raise Unavailable("the Kafka bus is closed")
            if self._producer is None:
                try:
                    async with asyncio.timeout(self.publish_timeout):
                        await self._create_topics()
                        self._producer = await self._start_producer()
                except (KafkaError, OSError, TimeoutError) as exc:
                    raise Unavailable(f"Kafka at {','.join(self.servers)} is unavailable: "
                                      f"{exc!r}") from exc
            return self._producer

    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers, client_id=CLIENT_ID,
                                    request_timeout_ms=self.request_timeout_ms)
        try:
            await admin.start()
            replicas = self.replication_factor
            if replicas is None:
                # As many copies as the cluster allows, up to 3: one broker gets 1, a
                # production cluster 3 with min.insync.replicas=2 (acks=all means two copies).
                brokers = len((await admin.describe_cluster())["brokers"])
                replicas = max(1, min(MAX_REPLICATION_FACTOR, brokers))
            configs = ({"min.insync.replicas": str(MIN_INSYNC_REPLICAS)}
                       if replicas >= MAX_REPLICATION_FACTOR else {})
            response = await admin.create_topics(
                [NewTopic(self.topic_name(t), self.partitions, replicas, topic_configs=configs)
                 for t in TOPICS], timeout_ms=self.request_timeout_ms)
            for topic, code, *_ in response.topic_errors:
                error = for_code(code)
                # An existing topic keeps its partition count: changing it would move keys to
                # other partitions and break the per-key order of records already published.
                if code and error is not TopicAlreadyExistsError:
                    raise error(f"creating topic {topic}")
        finally:
            await admin.close()

    async def _start_producer(self) -> Any:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers, client_id=CLIENT_ID,
            # Idempotence: a produce request retried after a lost acknowledgement is not
            # appended twice, and retries cannot reorder one partition's records.
            enable_idempotence=True,
            # acks=all: acknowledged once every in-sync replica has the record (durable on
            # return, the port's first guarantee).
            acks="all", linger_ms=self.linger_ms,
            # Batches still waiting when this expires fail instead of being sent minutes later
            # once the broker is back; publish has given up on them by then anyway.
            request_timeout_ms=self.request_timeout_ms)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        """Append one record; returns once acknowledged, raises ``Unavailable`` otherwise."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                producer = self._producer or await self._started_producer()
                await producer.send_and_wait(self.topic_name(topic), value, key=key.encode())
        except (KafkaError, OSError, TimeoutError) as exc:
            raise Unavailable(f"publishing to {topic} failed: {exc!r}") from exc

    def consumer(self, group: str, topics: tuple[str, ...]) -> KafkaBusConsumer:
        consumer = KafkaBusConsumer(self, group, topics)
        self._consumers.add(consumer)
        return consumer

    def _forget(self, consumer: KafkaBusConsumer) -> None:
        self._consumers.discard(consumer)

    async def close(self) -> None:
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            # stop() flushes what is still queued; bounded so a dead broker cannot hang it.
            try:
                async with asyncio.timeout(self.publish_timeout):
                    await producer.stop()
            except (KafkaError, OSError, TimeoutError):
                log.warning("Kafka producer did not stop cleanly", exc_info=True)


class KafkaBusConsumer:
    """One member of a consumer group. Starts (joins the group) on the first ``poll``."""

    def __init__(self, bus: KafkaBus, group: str, topics: tuple[str, ...]) -> None:
        self.bus = bus
        self.group = group
        self.topics = tuple(topics)
        self._consumer: Any = None
        self._starting: asyncio.Task[Any] | None = None
        self._closed = False

    @property
    def group_id(self) -> str:
        return self.bus.group_prefix + self.group

    async def _start(self) -> Any:
        # Topics must exist with their partition count before subscribing: the broker may
        # auto-create missing ones with its own default count.
        await self.bus.start()
        consumer = AIOKafkaConsumer(
            *(self.bus.topic_name(t) for t in self.topics),
            bootstrap_servers=self.bus.servers, client_id=CLIENT_ID, group_id=self.group_id,
            # Offsets move only when the caller commits after writing: at-least-once.
            enable_auto_commit=False,
            # A new group reads everything still in the log, like the embedded bus.
            auto_offset_reset="earliest",
            session_timeout_ms=self.bus.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.bus.session_timeout_ms // 3))
        try:
            # Returns once the group gave this member its partitions. Coordinator errors of a
            # fresh cluster (GroupCoordinatorNotAvailable while __consumer_offsets is being
            # created) are retried inside; poll keeps returning [] meanwhile.
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _ready(self, timeout: float) -> Any:
        """The joined consumer, or None while it is still joining after ``timeout``."""
        if self._consumer is not None:
            return self._consumer
        if self._closed:
            raise Unavailable(f"consumer of group {self.group} is closed")
        if self._starting is None:
            # The join takes longer than a poll's timeout may allow: it runs as a task that
            # successive polls wait for, and that a cancelled poll leaves running.
            self._starting = asyncio.create_task(self._start(), name=f"join {self.group_id}")
        done, _ = await asyncio.wait({self._starting}, timeout=max(0.0, timeout))
        if not done:
            return None
        task, self._starting = self._starting, None
        try:
            self._consumer = task.result()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise Unavailable(f"group {self.group} could not join: {exc!r}") from exc
        return self._consumer

    async def poll(self, max_records: int, timeout: float) -> list[Record]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        consumer = await self._ready(timeout)
        if consumer is None:
            return []
        remaining_ms = max(0, int((deadline - loop.time()) * 1000))
        try:
            batches = await consumer.getmany(timeout_ms=remaining_ms, max_records=max_records)
        except KafkaError as exc:
            if exc.retriable:
                # Coordinator moves, leader changes: the client recovers by itself.
                log.warning("Kafka poll of group %s: %r; retrying", self.group, exc)
                return []
            raise Unavailable(f"polling group {self.group} failed: {exc!r}") from exc
        except ConsumerStoppedError as exc:  # closed (or rewound) by another task meanwhile
            raise Unavailable(f"consumer of group {self.group} stopped") from exc
        # Records of one partition stay in log order; partitions are independent.
        return [Record(self.bus.bus_topic(tp.topic), m.key.decode() if m.key else "",
                       m.value or b"", tp.partition, m.offset)
                for tp, messages in batches.items() for m in messages]

    async def commit(self, records: list[Record]) -> None:
        if not records:
            return
        consumer = self._consumer
        if consumer is None:
            raise Unavailable(f"consumer of group {self.group} is not running")
        offsets: dict[Any, int] = {}
        for r in records:
            tp = TopicPartition(self.bus.topic_name(r.topic), r.partition)
            # Kafka's committed offset is the next record to read, hence + 1.
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        # A partition a rebalance moved to another member is no longer ours to commit: its
        # new owner resumes at the group's last commit and hands these records out again.
        assigned = consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not mine:
            return
        try:
            async with asyncio.timeout(self.bus.publish_timeout):
                await consumer.commit(mine)
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"committing group {self.group} failed: {exc!r}") from exc

    async def rewind(self) -> None:
        """Seek every assigned partition back to the group's commit (or the log start). If
        the broker cannot say where that is, leave the group instead: the next poll joins
        again and starts from the commits. Never raises (the runner calls it on failure)."""
        consumer = self._consumer
        if consumer is None:
            return  # not joined yet: the join positions every partition at the commit
        assigned = list(consumer.assignment())
        if not assigned:
            return
        try:
            async with asyncio.timeout(self.bus.publish_timeout):
                committed = await asyncio.gather(*(consumer.committed(tp) for tp in assigned))
            for tp, offset in zip(assigned, committed, strict=True):
                # Also drops the records fetched ahead. A partition never committed goes back
                # to 0; if retention has deleted its start, auto_offset_reset=earliest moves
                # it to the oldest record left (seek_to_beginning would ask the partition
                # leader first, behind the consumer's pending long-poll fetch).
                consumer.seek(tp, offset or 0)
        except (KafkaError, OSError, TimeoutError):
            # IllegalStateError (a KafkaError): a rebalance revoked a partition meanwhile.
            log.warning("rewind of group %s failed; rejoining", self.group, exc_info=True)
            self._consumer = None
            await self._stop(consumer)

    async def lag(self) -> int:
        """Records in this member's partitions after the group's commits (the whole group's
        lag when it is the only member). Waits for the join up to ``publish_timeout``."""
        consumer = await self._ready(self.bus.publish_timeout)
        if consumer is None:
            raise Unavailable(f"group {self.group} has not joined yet")
        assigned = list(consumer.assignment())
        if not assigned:
            return 0
        # The end of each partition is the high watermark of the last fetch response (at most
        # fetch_max_wait_ms = 0.5 s old while idle). Asking the leader (end_offsets) would
        # queue behind the consumer's pending long-poll fetch on the same connection and
        # stall the caller for up to 0.5 s; it is asked only for partitions not fetched yet.
        ends = {tp: consumer.highwater(tp) for tp in assigned}
        try:
            async with asyncio.timeout(self.bus.publish_timeout):
                unknown = [tp for tp, end in ends.items() if end is None]
                if unknown:
                    ends.update(await consumer.end_offsets(unknown))
                # Committed offsets come from the group coordinator, on its own connection.
                committed = await asyncio.gather(*(consumer.committed(tp) for tp in assigned))
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"lag of group {self.group} unknown: {exc!r}") from exc
        # A partition never committed counts from 0: a new group on a partition whose oldest
        # records retention already deleted over-reports until its first commit there.
        return sum(max(0, ends[tp] - (offset or 0))
                   for tp, offset in zip(assigned, committed, strict=True))

    def assignment(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs this member holds now; empty until it has joined."""
        consumer = self._consumer
        if consumer is None:
            return frozenset()
        return frozenset((self.bus.bus_topic(tp.topic), tp.partition)
                         for tp in consumer.assignment())

    async def _stop(self, consumer: Any) -> None:
        # Leaves the group, so the partitions move to the other members at once.
        try:
            async with asyncio.timeout(self.bus.publish_timeout):
                await consumer.stop()
        except (KafkaError, OSError, TimeoutError):
            log.warning("Kafka consumer of group %s did not stop cleanly", self.group,
                        exc_info=True)

    async def close(self) -> None:
        self._closed = True
        self.bus._forget(self)
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()  # a join still running stops its consumer itself
            await asyncio.wait({starting})
            if not starting.cancelled() and starting.exception() is None:
                await self._stop(starting.result())  # it had joined just before the cancel
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._stop(consumer)
