"""The benchmarks' processes: what they read from /proc (process trees, CPU ticks, ports,
per-core load) and how they stop a process group.

Shared by ``run.py`` and ``backends.py`` (both run as scripts from this folder, so
``import procs`` finds it). Linux only; every reader returns None (or skips) for a process
that is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

SERVICES_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "services"
SERVICES = ("redis", "kafka", "ferretdb")


def read_proc(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, utime+stime ticks) of a process, None if it is gone."""
    s = read_proc(f"/proc/{pid}/stat")
    if not s:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[11]) + int(rest[12])


def proc_ticks(pid: int) -> int | None:
    st = proc_stat(pid)
    return st[2] if st else None


def proc_rss_kib(pid: int) -> int | None:
    s = read_proc(f"/proc/{pid}/status")
    if not s:
        return None
    for line in s.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one), summed over the threads."""
    on = wait = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        s = read_proc(f"/proc/{pid}/task/{tid}/schedstat")
        if s:
            f = s.split()
            on += int(f[0]) / 1e9
            wait += int(f[1]) / 1e9
    return on, wait


def proc_cmd(pid: int) -> str:
    return " ".join((read_proc(f"/proc/{pid}/cmdline") or "").split("\0")).strip()


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def descendants(root: int) -> list[int]:
    """root and every live process below it."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                children.setdefault(st[1], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if proc_stat(p) is None:
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def listening_ports(pids: list[int]) -> dict[int, list[int]]:
    """pid -> TCP ports it listens on."""
    inode_port: dict[str, int] = {}
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read_proc(f) or "").splitlines()[1:]:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A":  # LISTEN
                inode_port[parts[9]] = int(parts[1].rsplit(":", 1)[1], 16)
    out: dict[int, list[int]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        port = inode_port.get(link[8:-1])
                        if port is not None:
                            out.setdefault(pid, []).append(port)
    return out


def cpu_times() -> dict[str, tuple[int, int, int, int]]:
    """Per core (and "all"): (busy, iowait, total, irq+softirq) jiffies from /proc/stat."""
    out = {}
    for line in (read_proc("/proc/stat") or "").splitlines():
        if not line.startswith("cpu"):
            break
        f = line.split()
        v = [int(x) for x in f[1:9]]  # user nice system idle iowait irq softirq steal
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        out["all" if f[0] == "cpu" else f[0][3:]] = (busy, v[4], busy + v[3] + v[4], v[5] + v[6])
    return out


def cpu_busy_pct(a: dict, b: dict) -> dict[str, dict[str, float]]:
    """busy%, iowait% and irq% (part of busy) per core between two cpu_times() readings."""
    out = {}
    for k in b:
        if k in a and b[k][2] > a[k][2]:
            dt = b[k][2] - a[k][2]
            out[k] = {"busy_pct": round(100.0 * (b[k][0] - a[k][0]) / dt, 1),
                      "iowait_pct": round(100.0 * (b[k][1] - a[k][1]) / dt, 1),
                      "irq_pct": round(100.0 * (b[k][3] - a[k][3]) / dt, 1)}
    return out


def url_port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def stop_group(proc: subprocess.Popen, name: str, log: Callable[[str], None],
               timeout: float = 30) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL what is left after ``timeout``."""
    if proc.poll() is None:
        log(f"stopping {name} (SIGTERM to process group {proc.pid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop in {timeout:.0f}s: SIGKILL")
    # whatever is left of the group (children of up, if any survive)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class Server:
    """A server started in its own process group, printing a JSON ready line."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 log: Callable[[str], None] = print):
        self.name = name
        self.log = log
        self.argv = argv
        self.log_path = log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115
        log(f"starting {name}: {' '.join(argv)}")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            start_new_session=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace"))
        self.lines.put(None)

    def wait_ready(self, timeout: float) -> dict:
        """The first JSON line with ``"event": "ready"``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no ready line within {timeout:.0f}s")
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"{self.name} exited (code {self.proc.wait()}) before it was ready; "
                    f"log tail:\n{self.log_tail()}"
                )
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and obj.get("event") == "ready":
                    return obj

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self, timeout: float = 30) -> None:
        stop_group(self.proc, self.name, self.log, timeout)
        self.log_file.close()


def services_up(timeout: float, log: Callable[[str], None]) -> tuple[dict[str, str], bool]:
    """`scripts/services up`: the exports, and whether all three were already running."""
    st = subprocess.run([str(SERVICES_SCRIPT), "status"], cwd=SERVICES_SCRIPT.parent.parent,
                        capture_output=True, text=True, timeout=60, check=False)
    were_up = st.returncode == 0
    log("production: scripts/services up" + (" (already running)" if were_up else ""))
    r = subprocess.run([str(SERVICES_SCRIPT), "up"], cwd=SERVICES_SCRIPT.parent.parent,
                       stdout=subprocess.PIPE, stderr=None, text=True,
                       timeout=timeout, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/services up failed (exit {r.returncode})")
    env: dict[str, str] = {}
    for line in r.stdout.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            k, v = parts[1].split("=", 1)
            env[k] = v
    for k in ("CHAT_STORE_URL", "CHAT_BUS_URL", "CHAT_CACHE_URL", "CHAT_SERVICES_DIR"):
        if k not in env:
            raise RuntimeError(f"scripts/services up printed no {k}")
    for k in ("CHAT_STORE_URL", "CHAT_BUS_URL", "CHAT_CACHE_URL"):
        host = env[k].split("://", 1)[1].split("/", 1)[0].split(",")
        if not all(h.rsplit(":", 1)[0] in ("127.0.0.1", "localhost") for h in host):
            raise RuntimeError(f"refusing a non-loopback backend: {k}={env[k]}")
    return env, were_up


def service_pids(services_dir: str) -> dict[str, int]:
    out = {}
    for name in SERVICES:
        for pf in sorted(Path(services_dir, name).glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pf.read_text().strip())
                if proc_stat(pid) is not None:
                    out[name] = pid
    return out


class Affinity:
    """Pins processes (every thread: ``taskset -a -cp``) and restores what they had."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.saved: dict[int, tuple[str, list[int]]] = {}  # pid -> (cmd, cores before)
        self.lock = threading.Lock()

    def pin(self, pid: int, core: int, *, restore: bool) -> bool:
        with self.lock:
            if restore and pid not in self.saved:
                try:
                    before = sorted(os.sched_getaffinity(pid))
                except OSError:
                    self.log(f"cannot read the affinity of {pid} (gone?): not pinned")
                    return False
                self.saved[pid] = (proc_cmd(pid)[:120], before)
            r = subprocess.run(["taskset", "-a", "-cp", str(core), str(pid)],
                               capture_output=True, text=True, timeout=30, check=False)
            if r.returncode != 0:
                self.log(f"taskset -a -cp {core} {pid} failed: {r.stderr.strip()[:200]}")
            return r.returncode == 0

    def restore_all(self) -> list[dict]:
        out = []
        with self.lock:
            for pid, (cmd, cores) in list(self.saved.items()):
                if proc_stat(pid) is None or proc_cmd(pid)[:120] != cmd:
                    self.log(f"affinity of {pid}: not restored, the process is gone")
                    out.append({"pid": pid, "restored": False, "why": "gone"})
                    self.saved.pop(pid)
                    continue
                spec = ",".join(map(str, cores or range(os.cpu_count() or 1)))
                r = subprocess.run(["taskset", "-a", "-cp", spec, str(pid)],
                                   capture_output=True, text=True, timeout=30, check=False)
                out.append({"pid": pid, "cores": spec, "restored": r.returncode == 0})
                self.log(f"affinity of {pid} ({cmd.split()[0] if cmd else '?'}) restored to "
                         f"{spec}" + ("" if r.returncode == 0
                                      else f" FAILED: {r.stderr.strip()[:200]}"))
                self.saved.pop(pid)
        return out
