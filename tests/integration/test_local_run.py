"""``chatcluster up`` (PROTOCOL.md §3): durability across kill -9, restarts, clean stops.

Each test runs its own cluster in its own state directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

from tests.chatclient import Client, Cluster, all_history, start_cluster, wait_for


def children(pid: int) -> dict[int, str]:
    """pid -> command line of the direct children of ``pid``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
        except (OSError, IndexError, ValueError):
            continue
    return out


async def signed_in(cluster: Cluster, user: str, replica: int) -> Client:
    tokens = await cluster.token(user)
    return await Client.connect(cluster.socket_urls[replica], tokens["access_token"], user)



async def test_acknowledged_messages_survive_kill_9_of_the_whole_cluster(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cluster = start_cluster(state)
    try:
        a = await signed_in(cluster, "alice", 0)
        b = await signed_in(cluster, "bob", 1)
        cid = (await a.ok("conversation.create", {"type": "direct", "members": ["bob"]})
               )["conversation"]["id"]

        async def send(client: Client, n: int) -> list[dict]:
            replies = await asyncio.gather(*(client.ok("message.send", {
                "conversation_id": cid, "client_msg_id": f"{client.user}-{i}",
                "text": f"{client.user} {i}"}) for i in range(n)))
            return [r["message"] for r in replies]

        acked = [m for batch in await asyncio.gather(send(a, 40), send(b, 40)) for m in batch]
    finally:
        cluster.kill_group()  # right after the last ok: nothing had time to settle

    restarted = start_cluster(state)
    try:
        assert (restarted.app_id, restarted.app_secret, restarted.admin_token) == (
            cluster.app_id, cluster.app_secret, cluster.admin_token)
        reader = await signed_in(restarted, "alice", 1)

        async def complete() -> list[dict] | None:
            got = await all_history(reader, cid)
            return got if len(got) >= len(acked) else None

        history = await wait_for(complete, timeout=15)
        by_id = {m["id"]: m for m in history}
        for m in acked:
            assert by_id[m["id"]]["seq"] == m["seq"] and by_id[m["id"]]["text"] == m["text"]
        assert len(history) == len(acked), "no duplicates either"
        after = (await reader.ok("message.send", {"conversation_id": cid,
                                                  "client_msg_id": "after",
                                                  "text": "after"}))["message"]
        assert after["seq"] > max(m["seq"] for m in acked), "seq never goes back"
        await reader.close()
    finally:
        restarted.stop()


async def test_a_killed_replica_loses_nothing_and_comes_back(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "state")
    try:
        a = await signed_in(cluster, "alice", 0)
        cid = (await a.ok("conversation.create", {"type": "group", "members": ["bob"]})
               )["conversation"]["id"]
        acked = [(await a.ok("message.send", {"conversation_id": cid, "client_msg_id": str(i),
                                              "text": str(i)}))["message"] for i in range(20)]
        replica = a.ready["replica"]
        victim = next(pid for pid, cmd in children(cluster.process.pid).items()
                      if f"--replica-id {replica} " in cmd + " ")
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(websockets.ConnectionClosed):
            await a.request("ping", timeout=10)

        # The client reconnects to another URL and recovers everything from history.
        b = await signed_in(cluster, "bob", 1)
        assert b.ready["replica"] != replica
        history = await all_history(b, cid)
        assert [m["id"] for m in history] == [m["id"] for m in acked]

        # up restarts the replica on the same URL. (A dead replica stays listed until its
        # heartbeat is 3 s old, so clients try the next URL when one refuses.)
        url = cluster.socket_urls[0]  # where ``a`` was: the killed replica

        async def back() -> Client | None:
            try:
                return await Client.connect(url, (await cluster.token("alice"))["access_token"])
            except OSError:
                return None

        again = await wait_for(back, timeout=30, interval=0.3)
        assert again.ready["replica"] == replica
        assert (await again.ok("ping"))["server_time"]
        body = await cluster.token("probe")
        assert sorted(body["socket_urls"]) == sorted(cluster.socket_urls)
        await again.close()
        await b.close()
    finally:
        cluster.stop()


async def test_sigterm_closes_clients_with_1012_and_stops_every_process(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "state")
    kids = children(cluster.process.pid)
    assert len(kids) == 4  # gateway, two socket replicas, consumers
    clients = [await signed_in(cluster, "alice", i) for i in (0, 1)]
    cluster.process.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(c.closed_with(timeout=20) for c in clients))
    assert codes == [1012, 1012]
    assert await asyncio.get_running_loop().run_in_executor(None, cluster.stop) == 0
    deadline = time.monotonic() + 10
    while alive(kids) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not alive(kids)


def alive(pids: object) -> list[int]:
    """Those of ``pids`` that still run (zombies awaiting their parent's wait do not count)."""
    out = []
    for pid in pids:  # type: ignore[attr-defined]
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def test_children_exit_when_up_is_killed(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "state")
    kids = children(cluster.process.pid)
    cluster.process.send_signal(signal.SIGKILL)  # only up itself
    cluster.process.wait(10)
    cluster.stop()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and alive(kids):
        time.sleep(0.2)
    assert not alive(kids)


@pytest.mark.parametrize("args", [["--help"], ["up", "--help"], ["socket", "--help"],
                                  ["gateway", "--help"], ["consumers", "--help"]])
def test_every_command_has_help(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "chatcluster", *args], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0 and "usage:" in done.stdout


def test_unknown_backend_urls_are_refused_clearly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "chatcluster", "up", "--state-dir",
                           str(tmp_path), "--store", "nosuch://x"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 2 and "--store" in done.stderr
