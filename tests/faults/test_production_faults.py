"""One fault at a time, under load, on the production backends (PROTOCOL.md §2 Guarantees).

Each test starts its own ``chatcluster up`` on the real servers of ``scripts/services up``
(its own namespace, topics, keys and database), has four clients on both socket replicas send
to one group at a modest pace (each message with its own ``client_msg_id``; a send answered
with an error, or lost with its connection, is resent with the same ``client_msg_id`` until
it is answered ok), injects ONE fault, and then proves that nothing acknowledged was lost or
duplicated:

- every message answered ok is in ``message.history`` exactly once, with the id and seq it
  was acknowledged with, and nothing else is stored;
- no two stored messages share a seq; the sync log holds one ``message.new`` per message,
  in strictly increasing ``event_seq`` order;
- the seqs one connection got answered, and the ``event_seq``s every connection was pushed,
  never went backwards (nor repeated);
- sends work afterwards, above every seq handed out before.

What each test observed is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from chatcluster.socket.operations import PUBLISH_DEADLINE_S
from tests.chatclient import (
    Client,
    Cluster,
    all_history,
    forget_cluster,
    production_env,
    start_cluster,
    wait_for,
)
from tests.faults.conftest import Servers

T = TypeVar("T")

# Each of the four senders sends one message, then waits this long: about 25 messages a
# second each on this machine (a send takes a few ms), ~100 a second in all.
PACE_S = 0.03
# A send that gets no answer at all within this long counts as "no_answer" (and is resent).
REQUEST_TIMEOUT_S = 15.0
# A message is resent for at most this long before the test gives up on it.
GIVE_UP_S = 100.0
# An error answer must come within the publish deadline, plus this much for the rest of the
# request (sequencer, scheduling on a busy 2-core machine).
ANSWER_SLACK_S = 2.0
# How long the pipeline may take to store everything once the fault is over.
DRAIN_TIMEOUT_S = 45.0


# -- small helpers ---------------------------------------------------------------------------

def children(pid: int) -> dict[int, str]:
    """pid -> command line of the direct children of ``pid`` (``up``'s processes)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
        except (OSError, IndexError, ValueError):
            continue
    return out


def child_pid(cluster: Cluster, *words: str) -> int | None:
    """The pid of ``up``'s child whose command line holds every one of ``words``."""
    for pid, cmd in children(cluster.process.pid).items():
        if all(f" {w} " in f" {cmd} " for w in words):
            return pid
    return None


async def token_route(cluster: Cluster, user: str) -> tuple[int, dict[str, Any]]:
    """POST /api/v1/auth/sdk/token without asserting: (status, body)."""
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        r = await http.post("/api/v1/auth/sdk/token", json={
            "app_id": cluster.app_id, "app_secret": cluster.app_secret,
            "user_external_id": user})
    return r.status_code, r.json()


async def pages(client: Client, op: str, data: dict[str, Any], key: str,
                cursor_field: str, cursor: Callable[[dict[str, Any]], int]) -> list[dict]:
    """Every item of a paged op (``message.history`` after_seq / ``conversation.sync``)."""
    out: list[dict] = []
    after = 0
    while True:
        page = (await client.request(op, {**data, cursor_field: after}, timeout=30))
        assert page.get("ok"), f"{op}: {page}"
        items = page["data"][key]
        out += items
        if not page["data"]["has_more"] or not items:
            return out
        after = cursor(items[-1])



async def all_sync(client: Client, cid: str) -> list[dict]:
    return await pages(client, "conversation.sync", {"conversation_id": cid, "limit": 500},
                       "events", "after_event_seq", lambda e: int(e["event_seq"]))


# -- what every connection is pushed -----------------------------------------------------------
@dataclass
class Watch:
    """Reads one connection's pushes: event_seq and message seq must only go up, and no
    message may be pushed twice."""

    name: str
    last_event_seq: int = 0
    last_seq: int = 0
    pushed: Counter[str] = field(default_factory=Counter)  # message id -> message.new count
    backwards: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self, client: Client) -> None:
        self.task = asyncio.create_task(self._run(client))

    async def _run(self, client: Client) -> None:
        while True:
            frame = await client.events.get()
            event_seq = frame.get("event_seq")
            if event_seq is not None:
                if event_seq <= self.last_event_seq:
                    self.backwards.append(f"{self.name}: {frame['event']} event_seq "
                                          f"{event_seq} after {self.last_event_seq}")
                self.last_event_seq = max(self.last_event_seq, event_seq)
            if frame["event"] == "message.new":
                message = frame["data"]["message"]
                self.pushed[message["id"]] += 1
                if message["seq"] <= self.last_seq:
                    self.backwards.append(f"{self.name}: seq {message['seq']} after "
                                          f"{self.last_seq}")
                self.last_seq = max(self.last_seq, message["seq"])

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# -- the load --------------------------------------------------------------------------------
@dataclass
class Sender:
    user: str
    client: Client
    url: str
    acked: dict[str, dict] = field(default_factory=dict)   # client_msg_id -> message, in order
    codes: Counter[str] = field(default_factory=Counter)   # every failed attempt, by outcome
    retried: int = 0          # messages that needed more than one attempt
    reconnects: int = 0
    slowest_error_s: float = 0.0
    slowest_ok_s: float = 0.0
    slowest_ok_at: float = 0.0
    last_ok_at: float = 0.0
    watches: list[Watch] = field(default_factory=list)


class Load:
    """Senders on both replicas sending to one group until ``stop()``; errors are resent
    with the same client_msg_id (after reconnecting, if the connection dropped)."""

    def __init__(self, cluster: Cluster, cid: str, senders: list[Sender]) -> None:
        self.pace_s = PACE_S
        self.cluster = cluster
        self.cid = cid
        self.senders = senders
        self._stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._send_loop(s)) for s in self.senders]

    async def stop(self) -> None:
        """Stop sending new messages; wait until every message started is answered ok."""
        self._stop.set()
        await asyncio.gather(*self.tasks)

    async def cancel(self) -> None:
        """Abandon the senders (a test that failed mid-load must not leave them running)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def acked(self) -> int:
        return sum(len(s.acked) for s in self.senders)

    def codes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for s in self.senders:
            total += s.codes
        return total

    async def _send_loop(self, s: Sender) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            await self.deliver(s, f"{s.user}-{i}", f"{s.user} says {i}")
            await asyncio.sleep(self.pace_s)

    async def deliver(self, s: Sender, cmid: str, text: str) -> dict:
        """Send until answered ok (the same client_msg_id every time)."""
        first = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            assert time.monotonic() - first < GIVE_UP_S, (
                f"{s.user} {cmid}: still not ok after {GIVE_UP_S} s: {s.codes}")
            started = time.monotonic()
            try:
                frame = await s.client.request("message.send", {
                    "conversation_id": self.cid, "client_msg_id": cmid, "text": text},
                    timeout=REQUEST_TIMEOUT_S)
            except websockets.ConnectionClosed:
                s.codes["connection_closed"] += 1
                await self.reconnect(s)
                continue
            except TimeoutError:
                s.codes["no_answer"] += 1
                continue
            took = time.monotonic() - started
            if frame.get("ok"):
                message: dict = frame["data"]["message"]
                assert message["client_msg_id"] == cmid and message["text"] == text, frame
                if attempts > 1:
                    s.retried += 1
                s.acked[cmid] = message
                s.last_ok_at = time.monotonic()
                if took > s.slowest_ok_s:
                    s.slowest_ok_s, s.slowest_ok_at = took, started
                return message
            error = frame["error"]
            s.codes[error["code"]] += 1
            s.slowest_error_s = max(s.slowest_error_s, took)
            await asyncio.sleep(error.get("retry_after_ms", 250) / 1000)

    async def reconnect(self, s: Sender, timeout: float = 30) -> None:
        """What an SDK does when its socket drops: ask the token route for the live replicas
        and connect to one, preferring any other than the one that dropped it."""
        s.reconnects += 1
        await s.client.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await token_route(self.cluster, s.user)
            urls = body.get("socket_urls", []) if status == 200 else []
            for url in sorted(urls, key=lambda u: u == s.url):
                try:
                    client = await Client.connect(url, body["access_token"], s.user,
                                                  open_timeout=5)
                except (OSError, TimeoutError, websockets.InvalidHandshake):
                    continue
                s.client, s.url = client, url
                watch = Watch(f"{s.user}#{s.reconnects}")
                watch.start(client)
                s.watches.append(watch)
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{s.user} could not reconnect within {timeout} s")


@dataclass
class Scenario:
    cluster: Cluster
    cid: str
    senders: list[Sender]
    observers: list[tuple[Client, Watch]]
    load: Load
    namespace: str

    def watches(self) -> list[Watch]:
        return [w for s in self.senders for w in s.watches] + [w for _, w in self.observers]


@pytest.fixture
async def scenario(tmp_path: Path, servers: Servers) -> AsyncIterator[Scenario]:
    """A fresh production cluster, four senders (two per replica) and one observer per
    replica in one group; the load is created but not started."""
    await servers.up()  # an earlier fault must not leak into this cluster's start
    env = production_env("f")
    cluster = await asyncio.to_thread(start_cluster, tmp_path / "state", env=env)
    opened: list[Client] = []
    scenario: Scenario | None = None
    try:
        async def signed_in(user: str, replica: int) -> Client:
            tokens = await cluster.token(user)
            client = await Client.connect(cluster.socket_urls[replica], tokens["access_token"],
                                          user)
            opened.append(client)
            return client

        names = [f"s{i}" for i in range(4)]
        clients = [await signed_in(n, i % 2) for i, n in enumerate(names)]
        created = await clients[0].ok("conversation.create", {
            "type": "group", "members": [*names[1:], "o0", "o1"], "title": "faults"})
        cid = created["conversation"]["id"]
        observers = []
        for i in (0, 1):
            client = await signed_in(f"o{i}", i)
            watch = Watch(f"o{i}")
            watch.start(client)
            observers.append((client, watch))
        senders = []
        for i, (name, client) in enumerate(zip(names, clients, strict=True)):
            sender = Sender(name, client, cluster.socket_urls[i % 2])
            watch = Watch(name)
            watch.start(client)
            sender.watches.append(watch)
            senders.append(sender)
        scenario = Scenario(cluster, cid, senders, observers, Load(cluster, cid, senders),
                            env["CHAT_NAMESPACE"])
        yield scenario
    finally:
        # Servers back first (a failed test may have left one down or stopped), so that the
        # cluster stops cleanly and its topics, database and keys can be deleted.
        with contextlib.suppress(OSError, ValueError, AssertionError):
            servers.signal("ferretdb", signal.SIGCONT)
        with contextlib.suppress(AssertionError, TimeoutError):
            await servers.up()  # the servers fixture insists on health afterwards
        if scenario is not None:
            await scenario.load.cancel()
            for w in scenario.watches():
                await w.stop()
            opened += [s.client for s in scenario.senders]
            opened += [c for c, _ in scenario.observers]
        for client in opened:
            with contextlib.suppress(Exception):
                await client.close()
        try:
            await asyncio.to_thread(cluster.stop)
        except Exception:
            cluster.kill_group()
        await forget_cluster(env)


# -- the proof -------------------------------------------------------------------------------
async def reader_for(sc: Scenario) -> Client:
    _, body = await token_route(sc.cluster, "s0")
    return await Client.connect(body["socket_urls"][0], body["access_token"], "s0")


async def settled_history(sc: Scenario, reader: Client, timeout: float = DRAIN_TIMEOUT_S
                          ) -> tuple[list[dict], float]:
    """Wait until every acknowledged message is in history: (history, seconds it took)."""
    acked = {m["id"]: m for s in sc.senders for m in s.acked.values()}
    newest = max(acked.values(), key=lambda m: m["seq"])
    started = time.monotonic()

    async def newest_stored() -> bool:  # cheap: one page, before the full read
        page = await reader.ok("message.history", {"conversation_id": sc.cid,
                                                   "after_seq": newest["seq"] - 1, "limit": 1})
        return bool(page["messages"]) and page["messages"][0]["id"] == newest["id"]

    async def complete() -> list[dict] | None:
        if not await newest_stored():
            return None
        history = await all_history(reader, sc.cid)
        return history if acked.keys() <= {m["id"] for m in history} else None

    try:
        history = await wait_for(complete, timeout, interval=0.5, what="history complete")
    except AssertionError:
        got = {m["id"] for m in await all_history(reader, sc.cid)}
        missing = sorted((m["seq"], m["client_msg_id"]) for i, m in acked.items()
                         if i not in got)
        raise AssertionError(f"{len(missing)} of {len(acked)} acknowledged messages are not "
                             f"in history after {timeout} s: {missing[:20]}") from None
    return history, time.monotonic() - started


async def prove_nothing_lost_or_duplicated(sc: Scenario) -> dict[str, Any]:
    """Every acknowledged message stored exactly once, as acknowledged; nothing else stored;
    seqs unique; the sync log and every connection's pushes in order. Returns figures."""
    reader = await reader_for(sc)
    try:
        history, drain_s = await settled_history(sc, reader)
        acked = {m["id"]: m for s in sc.senders for m in s.acked.values()}
        seqs = [m["seq"] for m in history]
        assert seqs == sorted(set(seqs)), "two stored messages share a seq (or out of order)"
        ids = Counter(m["id"] for m in history)
        assert max(ids.values()) == 1, f"stored twice: {[i for i, n in ids.items() if n > 1]}"
        keys = Counter((m["sender_id"], m["client_msg_id"]) for m in history)
        assert max(keys.values()) == 1, (
            f"one client_msg_id stored twice: {[k for k, n in keys.items() if n > 1]}")
        by_id = {m["id"]: m for m in history}
        for message in acked.values():
            stored = by_id[message["id"]]
            assert (stored["seq"], stored["client_msg_id"], stored["text"]) == (
                message["seq"], message["client_msg_id"], message["text"]), (message, stored)
        extra = [m for m in history if m["id"] not in acked]
        assert not extra, f"stored but never acknowledged: {extra[:5]}"

        # The seqs one connection was answered follow its send order.
        for s in sc.senders:
            mine = [m["seq"] for m in s.acked.values()]
            assert mine == sorted(set(mine)), f"{s.user}: answered seqs went backwards"

        # The sync log: one message.new per message, event_seqs strictly increasing.
        events = await all_sync(reader, sc.cid)
        event_seqs = [e["event_seq"] for e in events]
        assert event_seqs == sorted(set(event_seqs)), "sync log event_seqs not increasing"
        logged = Counter(e["data"]["message"]["id"] for e in events
                         if e["event"] == "message.new")
        assert logged.keys() == acked.keys(), (
            f"sync log: {len(acked.keys() - logged.keys())} acked messages missing, "
            f"{len(logged.keys() - acked.keys())} unknown")
        assert max(logged.values()) == 1, "a message appears twice in the sync log"

        # What every connection was pushed never went backwards, and nothing twice.
        backwards = [b for w in sc.watches() for b in w.backwards]
        assert not backwards, backwards[:10]
        twice = [(w.name, i) for w in sc.watches() for i, n in w.pushed.items() if n > 1]
        assert not twice, f"message.new pushed twice to one connection: {twice[:10]}"

        # Sends work afterwards, above everything handed out before.
        top = max(seqs)
        for s in sc.senders:
            after = await sc.load.deliver(s, f"{s.user}-after", "after the fault")
            assert after["seq"] > top, f"{s.user}: seq {after['seq']} not above {top}"

        # Observers were pushed most messages (fan-out is best effort, so not a guarantee).
        pushed = {w.name: len(acked.keys() & w.pushed.keys()) for _, w in sc.observers}
        jump = max(itertools.pairwise(seqs), key=lambda p: p[1] - p[0], default=(0, 0))
        return {"acked": len(acked), "stored": len(history), "drain_s": round(drain_s, 1),
                "seq_range": (min(seqs), max(seqs)),
                "burned_seqs": max(seqs) - min(seqs) + 1 - len(seqs), "largest_jump": jump,
                "observers_pushed": pushed}
    finally:
        await reader.close()


def report(name: str, sc: Scenario, figures: dict[str, Any]) -> None:
    load = sc.load
    print(f"\n[{name}] acked={load.acked()} failed attempts={dict(load.codes())} "
          f"retried messages={sum(s.retried for s in sc.senders)} "
          f"reconnects={sum(s.reconnects for s in sc.senders)} "
          f"slowest error answer={max(s.slowest_error_s for s in sc.senders):.2f}s "
          f"slowest ok={max(s.slowest_ok_s for s in sc.senders):.2f}s "
          + " ".join(f"{k}={v}" for k, v in figures.items()))


async def sleep_while_loaded(sc: Scenario, seconds: float) -> None:
    """Let the load run; fail early if a sender task died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for task in sc.load.tasks:
            if task.done():
                task.result()  # raises what killed it
                raise AssertionError("a sender stopped by itself")
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


async def pipeline_metric(cluster: Cluster, name: str, group: str = "persist") -> float:
    """A counter of the running consumers' /metrics, e.g. chat_pipeline_records_total (0 if
    the consumers do not answer)."""
    url_file = cluster.state_dir / "run" / "consumers.url"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"{url_file.read_text()}/metrics")).text
    except (OSError, httpx.HTTPError):
        return 0.0
    for line in text.splitlines():
        if line.startswith(f'{name}{{group="{group}"}}'):
            return float(line.split()[-1])
    return 0.0


# -- the faults ------------------------------------------------------------------------------
@pytest.mark.timeout(150)
async def test_kill_9_of_the_consumers_mid_batch_loses_and_duplicates_nothing(
        scenario: Scenario) -> None:
    sc = scenario
    sc.load.start()
    await sleep_while_loaded(sc, 3)
    # Kill while the persist group is writing: its record count moved within the last 0.3 s.
    await wait_for(lambda: _busy(sc.cluster), 10, interval=0.1, what="consumers busy")
    victim = child_pid(sc.cluster, "consumers")
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    acked_at_kill = sc.load.acked()

    async def restarted() -> int | None:
        pid = child_pid(sc.cluster, "consumers")
        return pid if pid not in (None, victim) else None

    await wait_for(restarted, 20, what="consumers restarted by up")
    restart_s = time.monotonic() - killed_at
    await sleep_while_loaded(sc, 6)
    await sc.load.stop()
    load_end = time.monotonic()
    figures = await prove_nothing_lost_or_duplicated(sc)
    assert not sc.load.codes(), f"sends failed although only the consumers died: " \
                                f"{sc.load.codes()}"
    report("consumers kill -9", sc, {"acked_at_kill": acked_at_kill,
                                     "restart_s": round(restart_s, 1),
                                     "kill_to_drained_s": round(
                                         load_end - killed_at + figures["drain_s"], 1),
                                     **figures})


async def _busy(cluster: Cluster) -> bool:
    before = await pipeline_metric(cluster, "chat_pipeline_records_total")
    await asyncio.sleep(0.3)
    return await pipeline_metric(cluster, "chat_pipeline_records_total") > before


@pytest.mark.timeout(240)
async def test_kafka_broker_restart_answers_unavailable_then_every_resend_is_stored_once(
        scenario: Scenario, servers: Servers) -> None:
    sc = scenario
    sc.load.start()
    await sleep_while_loaded(sc, 3)
    servers.signal("kafka", signal.SIGKILL)
    killed_at = time.monotonic()
    acked_at_kill = sc.load.acked()
    await sleep_while_loaded(sc, 5)  # sends answer unavailable meanwhile
    unavailable_while_down = sc.load.codes()["unavailable"]
    restart_s = await servers.up()  # restarts the broker, returns once it is ready
    back_at = time.monotonic()

    async def every_sender_ok_again() -> bool:
        return all(s.last_ok_at > back_at for s in sc.senders)

    await wait_for(every_sender_ok_again, 60, what="sends ok again after the restart")
    sends_back_s = time.monotonic() - back_at
    await sleep_while_loaded(sc, 3)
    await sc.load.stop()
    figures = await prove_nothing_lost_or_duplicated(sc)

    codes = sc.load.codes()
    assert unavailable_while_down > 0, "the broker's death went unnoticed"
    assert set(codes) <= {"unavailable"}, f"only 'unavailable' is expected: {codes}"
    slowest = max(s.slowest_error_s for s in sc.senders)
    assert slowest <= PUBLISH_DEADLINE_S + ANSWER_SLACK_S, (
        f"an error was answered after {slowest:.1f} s (deadline {PUBLISH_DEADLINE_S} s)")
    report("kafka restart", sc, {"acked_at_kill": acked_at_kill,
                                 "down_to_up_returned_s": round(back_at - killed_at, 1),
                                 "services_up_s": round(restart_s, 1),
                                 "first_ok_after_up_s": round(sends_back_s, 1), **figures})


async def stop_mongodb(sc: Scenario, servers: Servers, seconds: float) -> tuple[int, float]:
    """SIGSTOP FerretDB for ``seconds`` under load (unresponsive, data kept), then SIGCONT:
    (messages acked meanwhile, when it resumed)."""
    before = sc.load.acked()
    servers.signal("ferretdb", signal.SIGSTOP)
    try:
        await sleep_while_loaded(sc, seconds)
    finally:
        servers.signal("ferretdb", signal.SIGCONT)
    return sc.load.acked() - before, time.monotonic()


@pytest.mark.timeout(150)
async def test_mongodb_unresponsive_for_10_s_every_send_is_ok_and_the_lag_drains(
        scenario: Scenario, servers: Servers) -> None:
    sc = scenario
    sc.load.start()
    await sleep_while_loaded(sc, 3)
    failures_before = await pipeline_metric(sc.cluster, "chat_pipeline_failures_total")
    acked_while_stopped, resumed_at = await stop_mongodb(sc, servers, 10)
    await sleep_while_loaded(sc, 3)
    await sc.load.stop()
    load_end = time.monotonic()
    figures = await prove_nothing_lost_or_duplicated(sc)
    failures = await pipeline_metric(sc.cluster, "chat_pipeline_failures_total")
    report("mongodb stopped 10 s", sc, {
        "acked_while_stopped": acked_while_stopped,
        "pipeline_failures": failures - failures_before,
        "resume_to_drained_s": round(load_end - resumed_at + figures["drain_s"], 1),
        **figures})
    assert not sc.load.codes(), f"sends failed while MongoDB was stopped: {sc.load.codes()}"
    assert acked_while_stopped > 0


@pytest.mark.timeout(120)
async def test_mongodb_unresponsive_does_not_hold_up_sends(
        scenario: Scenario, servers: Servers) -> None:
    sc = scenario
    # About 40 messages a second: the conversation stays well inside the sequencer's first
    # block of 1,000 numbers, whose refill needs MongoDB by design (docs/backends/redis.md).
    sc.load.pace_s = 0.08
    sc.load.start()
    await sleep_while_loaded(sc, 2)
    stopped_at = time.monotonic()
    acked_while_stopped, _ = await stop_mongodb(sc, servers, 8)
    await sc.load.stop()
    assert not sc.load.codes(), sc.load.codes()
    slow = [(s.user, round(s.slowest_ok_s, 1), round(s.slowest_ok_at - stopped_at, 1))
            for s in sc.senders if s.slowest_ok_s > 2.0]
    assert not slow, (f"sends stalled while MongoDB was stopped (user, seconds, started "
                      f"this long after the stop): {slow}; {acked_while_stopped} acked in 8 s, "
                      f"top seq {max(m['seq'] for s in sc.senders for m in s.acked.values())}")


@pytest.mark.timeout(150)
async def test_flushing_this_clusters_redis_keys_keeps_numbering_and_recovers_the_registry(
        scenario: Scenario) -> None:
    sc = scenario
    sc.load.start()
    await sleep_while_loaded(sc, 3)
    redis = Redis.from_url(os.environ["CHAT_CACHE_URL"])
    try:
        prefix = f"chat:{sc.namespace}:"
        deleted = 0
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            deleted += await redis.delete(key)
        flushed_at = time.monotonic()
        top_at_flush = max(m["seq"] for s in sc.senders for m in s.acked.values())
        left = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
    finally:
        await redis.aclose()
    assert deleted > 0

    async def both_listed() -> bool:
        status, body = await token_route(sc.cluster, "probe")
        return status == 200 and sorted(body["socket_urls"]) == sorted(sc.cluster.socket_urls)

    await wait_for(both_listed, 10, interval=0.1, what="both replicas listed again")
    registry_s = time.monotonic() - flushed_at
    # A new connection counts as online again (counts lost in the flush come back per user
    # at their next connection change).
    _, body = await token_route(sc.cluster, "o0")
    fresh = await Client.connect(sc.cluster.socket_urls[1], body["access_token"], "o0")
    try:
        async def online() -> bool:
            got = await fresh.ok("presence.get", {"users": ["o0"]})
            return bool(got["presence"]["o0"]["online"])

        await wait_for(online, 5, what="presence after the flush")
    finally:
        await fresh.close()
    await sleep_while_loaded(sc, 4)
    await sc.load.stop()
    figures = await prove_nothing_lost_or_duplicated(sc)
    report("redis namespace flush", sc, {"keys_deleted": deleted, "keys_left": len(left),
                                         "registry_back_s": round(registry_s, 1),
                                         "top_seq_at_flush": top_at_flush, **figures})
    assert not sc.load.codes(), f"sends failed across the flush: {sc.load.codes()}"


@pytest.mark.timeout(150)
async def test_kill_9_of_a_socket_replica_clients_reconnect_and_recover_everything(
        scenario: Scenario) -> None:
    sc = scenario
    sc.load.start()
    await sleep_while_loaded(sc, 3)
    dead_url = sc.cluster.socket_urls[0]
    observer, watch = sc.observers[0]
    replica = observer.ready["replica"]
    victim = child_pid(sc.cluster, "socket", "--replica-id", replica)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    # The observer on the dead replica sees its connection drop, reconnects to another URL
    # and recovers, from history, every message it had been pushed (and everything acked).
    await observer.closed_with(timeout=10)
    seen = set(watch.pushed)
    status, body = await token_route(sc.cluster, "o0")
    assert status == 200
    others = [u for u in body["socket_urls"] if u != dead_url]
    assert others, body["socket_urls"]
    again = await Client.connect(others[0], body["access_token"], "o0")
    try:
        acked_then = {m["id"] for s in sc.senders for m in s.acked.values()}

        async def recovered() -> bool:
            got = {m["id"] for m in await all_history(again, sc.cid)}
            return seen <= got and acked_then <= got

        await wait_for(recovered, 20, interval=0.5, what="observer recovered from history")
        recover_s = time.monotonic() - killed_at
    finally:
        await again.close()

    async def replica_back() -> Client | None:
        _, tokens = await token_route(sc.cluster, "probe")
        try:
            return await Client.connect(dead_url, tokens["access_token"], "probe",
                                        open_timeout=3)
        except (OSError, TimeoutError, websockets.InvalidHandshake):
            return None

    back = await wait_for(replica_back, 30, interval=0.3, what="replica restarted by up")
    restart_s = time.monotonic() - killed_at
    assert back.ready["replica"] == replica
    await back.close()
    await sleep_while_loaded(sc, 3)
    await sc.load.stop()
    figures = await prove_nothing_lost_or_duplicated(sc)
    codes = sc.load.codes()
    moved = [s for s in sc.senders if s.reconnects]
    report("socket replica kill -9", sc, {"observer_recovered_s": round(recover_s, 1),
                                          "observer_had_seen": len(seen),
                                          "replica_back_s": round(restart_s, 1), **figures})
    assert len(moved) == 2, "both senders of the dead replica reconnect"
    assert set(codes) <= {"connection_closed"}, codes
