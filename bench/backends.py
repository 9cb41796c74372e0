#!/usr/bin/env python3
"""chatcluster on its production backends next to the embedded default, in one invocation.

For each system (``embedded``: SQLite files in the state directory; ``production``: Redis,
Kafka and a MongoDB-protocol server from ``scripts/services``) this harness starts
``chatcluster up``, pins every server process to one core (``taskset -a -cp``: the whole
process tree of ``up`` and, for production, the Redis, Kafka and FerretDB servers, whose
affinity is restored afterwards) and runs the Go load generator on the other core:

  (a) saturation: the generator sends as fast as the cluster answers (``-rate 0``);
      accepted/s, delivered/s, latencies, then the time until the persistence lag
      (``chat_pipeline_lag{group="persist"}`` on the consumers' probe) is back at 0;
  (b) a fixed 500 msgs/s: send->deliver p50/p99;
  (c) a fixed 1,000 msgs/s: accepted/s, lag drain time, and the store's write commands
      per message (FerretDB/MongoDB ``serverStatus`` command counters; persist batches for
      both systems), which shows whether writes are batched;
  (d) a profile during a 500 msgs/s run: ``py-spy record -f raw`` of one socket replica and
      of the consumers; the share of active samples under redis, aiokafka, pymongo, sqlite,
      websockets and msgspec/json, turned into microseconds per message with the processes'
      CPU seconds from /proc; (d2) the same at a rate where the core has headroom (py-spy
      counts a runnable thread waiting for the core as busy, so on a saturated core its
      shares are wall-clock shares, not CPU shares).

Every run gets a fresh cluster (and, for production, a fresh namespace: database, topics,
Redis keys, deleted afterwards), measured at rest for a few seconds before the load.

Output: bench/results/backends-<UTC timestamp>.json (every figure, parameters, machine
info, production/embedded ratios) and .png next to it; raw py-spy stacks in
backends-<timestamp>-profiles/. Progress goes to stderr, the JSON path to stdout. Every step
is bounded in time (--max-seconds for the whole run); all traffic stays on 127.0.0.1.
See bench/BACKENDS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from procs import (
    SERVICES,
    Affinity,
    Server,
    cpu_busy_pct,
    cpu_times,
    descendants,
    listening_ports,
    loopback,
    proc_cmd,
    proc_stat,
    proc_ticks,
    read_proc,
    schedstat,
    service_pids,
    services_up,
    url_port,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISY_PCT = 10.0  # other processes' share of the servers' core that makes a run "noisy"
SEND_OP = "message.send"

_t0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[backends {time.monotonic() - _t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def http_get(url: str, timeout: float = 2.0) -> str:
    if not loopback(url):
        raise RuntimeError(f"refusing a non-loopback URL: {url}")
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode(errors="replace")


_PROM = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def prom(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels` (None if absent)."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = _PROM.match(line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            with contextlib.suppress(ValueError):
                total += float(m.group(3))
                found = True
    return total if found else None


# --------------------------------------------------------------------------------------------
# CPU affinity: pin, and always put back


AFFINITY = Affinity(log)


# --------------------------------------------------------------------------------------------
# the cluster


class Cluster(Server):
    """``chatcluster up`` in its own process group, pinned; its roles by listening port."""

    def __init__(self, name: str, args: argparse.Namespace, env: dict[str, str], work: Path):
        self.state_dir = work / f"state-{name}"
        argv = ["taskset", "-c", str(args.server_core), *args.chatcluster, "up", "--json",
                "--state-dir", str(self.state_dir)]
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
        super().__init__(name, argv, work / f"up-{name}.log", env, log)
        self.ready: dict[str, Any] = {}
        self.roles: dict[int, str] = {}
        self.consumers_url = ""
        self.socket_metrics: list[str] = []

    def wait_ready(self, timeout: float) -> dict:
        obj = super().wait_ready(timeout)
        for u in [obj.get("gateway_url", ""), *obj.get("socket_urls", [])]:
            if not loopback(u):
                raise RuntimeError(f"refusing to benchmark a non-loopback URL {u}")
        self.ready = obj
        self.socket_metrics = [
            f"http://127.0.0.1:{url_port(u)}/metrics" for u in obj["socket_urls"]]
        return obj

    def discover(self) -> dict[int, str]:
        """Role of every process of the tree: supervisor, gateway, socket-N, consumers."""
        url_file = self.state_dir / "run" / "consumers.url"
        self.consumers_url = url_file.read_text().strip() if url_file.exists() else ""
        if self.consumers_url and not loopback(self.consumers_url):
            raise RuntimeError(f"refusing a non-loopback consumers URL {self.consumers_url}")
        pids = descendants(self.proc.pid)
        ports = listening_ports(pids)
        by_port = {url_port(u): f"socket-{i + 1}" for i, u in enumerate(self.ready["socket_urls"])}
        by_port[url_port(self.ready["gateway_url"])] = "gateway"
        if self.consumers_url:
            by_port[url_port(self.consumers_url)] = "consumers"
        roles = {}
        for pid in pids:
            role = next((by_port[p] for p in ports.get(pid, []) if p in by_port), "")
            if pid == self.proc.pid:
                role = "supervisor"
            roles[pid] = role or proc_cmd(pid)[:60]
        self.roles = roles
        return roles

    def pid_of(self, role: str) -> int | None:
        return next((p for p, r in self.roles.items() if r == role), None)



# --------------------------------------------------------------------------------------------
# samplers


class MetricsPoller(threading.Thread):
    """Reads the consumers' /metrics (lag, records, batches of group persist) every 0.1 s."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url.rstrip("/") + "/metrics"
        self.interval = 0.1
        self.samples: list[tuple[float, float | None, float | None, float | None]] = []
        self.errors = 0
        self._halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.time()
            try:
                text = http_get(self.url, 2.0)
                s = (t, prom(text, "chat_pipeline_lag", group="persist"),
                     prom(text, "chat_pipeline_records_total", group="persist"),
                     prom(text, "chat_pipeline_batches_total", group="persist"))
                with self.lock:
                    self.samples.append(s)
            except Exception:
                self.errors += 1
            self._halt.wait(max(0.0, self.interval - (time.time() - t)))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def since(self, t: float) -> list[tuple[float, float | None, float | None, float | None]]:
        with self.lock:
            return [s for s in self.samples if s[0] >= t]

    def at(self, t: float) -> tuple[float, float | None, float | None, float | None] | None:
        """The last sample at or before t (else the first one after)."""
        with self.lock:
            before = [s for s in self.samples if s[0] <= t]
            after = [s for s in self.samples if s[0] > t]
        return before[-1] if before else (after[0] if after else None)

    def latest(self) -> tuple[float, float | None, float | None, float | None] | None:
        with self.lock:
            return self.samples[-1] if self.samples else None

    def wait_drained(self, after: float, timeout: float, confirm: float) -> float | None:
        """Unix time of the first lag == 0 reading at/after `after` that stays 0 for `confirm`
        seconds; None if that does not happen within `timeout` seconds."""
        deadline = time.time() + timeout
        while True:
            ss = self.since(after)
            zero_start = None
            for t, lag, _r, _b in ss:
                zero_start = (t if zero_start is None else zero_start) if lag == 0 else None
            if zero_start is not None and ss[-1][0] - zero_start >= confirm:
                # the first reading of the final run of zeros
                return zero_start
            if time.time() > deadline:
                return None
            time.sleep(0.1)


class ProcSampler(threading.Thread):
    """CPU ticks of the server processes and /proc/stat, every `interval` seconds."""

    def __init__(self, pids: dict[int, str], interval: float = 0.5,
                 watch: dict[str, int] | None = None):
        super().__init__(daemon=True)
        self.pids = dict(pids)
        self.interval = interval
        self.watch = dict(watch or {})  # the shared servers: someone else may stop or kill them
        self.incidents: list[str] = []
        self.side: dict[int, int] = {}
        self.samples: list[tuple[float, dict[int, int], dict]] = []
        self._halt = threading.Event()

    def sample(self) -> None:
        ticks = {p: t for p in self.pids if (t := proc_ticks(p)) is not None}
        # ours on the generator's core: this harness, the generator, py-spy, helpers; a
        # process that ended keeps its last reading (else its CPU would vanish from the sum)
        for p in descendants(os.getpid()):
            if p not in self.pids and (t := proc_ticks(p)) is not None:
                self.side[p] = t
        ticks[-1] = sum(self.side.values())
        self.samples.append((time.time(), ticks, cpu_times()))
        for name, pid in self.watch.items():
            st = proc_stat(pid)
            issue = f"{name} (pid {pid}) " + ("is gone" if st is None else "was stopped (T)")
            if (st is None or st[0] == "T") and issue not in self.incidents:
                self.incidents.append(issue)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def __enter__(self) -> ProcSampler:
        self.sample()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(5)
        self.sample()

    def window(self, t0: float, t1: float) -> tuple[Any, Any] | None:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            inside = [min(self.samples, key=lambda s: abs(s[0] - t0)),
                      min(self.samples, key=lambda s: abs(s[0] - t1))]
        a, b = inside[0], inside[-1]
        return (a, b) if b[0] > a[0] else None


class MongoPoller:
    """``serverStatus`` command counters (and Redis ``INFO commandstats``) every 0.5 s, from a
    helper process on the chatcluster virtualenv's Python (it has pymongo and redis)."""

    def __init__(self, python: str, url: str, max_seconds: float, redis_url: str = ""):
        self.samples: list[dict] = []
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "_helper", "mongo-poll", url,
             "--max-seconds", str(int(max_seconds)), *(["--redis", redis_url] if redis_url
                                                      else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                obj = json.loads(raw)
                with self.lock:
                    self.samples.append(obj)

    def at(self, t: float, *, after: bool = False) -> dict | None:
        with self.lock:
            ok = [s for s in self.samples if s.get("ok")]
        if after:
            later = [s for s in ok if s["t"] >= t]
            return later[0] if later else (ok[-1] if ok else None)
        earlier = [s for s in ok if s["t"] <= t]
        return earlier[-1] if earlier else (ok[0] if ok else None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


WRITE_COMMANDS = ("insert", "update", "delete", "findAndModify")


def mongo_delta(a: dict, b: dict, field: str = "commands") -> dict[str, int]:
    ca, cb = a.get(field, {}), b.get(field, {})
    return {k: int(cb.get(k, 0) - ca.get(k, 0)) for k in sorted(set(ca) | set(cb))
            if cb.get(k, 0) - ca.get(k, 0)}


# --------------------------------------------------------------------------------------------
# the load generator


def newest_loadgen() -> Path | None:
    cache = Path(os.environ.get("HOME", "/tmp")) / ".cache" / "chatcluster" / "bench"
    found = sorted(cache.glob("loadgen-*"), key=lambda p: p.stat().st_mtime)
    found = [p for p in found if p.is_file() and os.access(p, os.X_OK) and p.suffix != ".tmp"]
    return found[-1] if found else None


class Loadgen:
    """One generator run, pinned to the generator's core; its stderr is passed on to ours and
    watched for the moment it starts sending."""

    def __init__(self, exe: Path, core: int, target: list[str], extra: list[str],
                 env: dict[str, str], timeout: float):
        self.argv = ["taskset", "-c", str(core), str(exe), *target, *extra]
        if shutil.which("setpriv"):
            self.argv = ["setpriv", "--pdeathsig", "TERM", "--", *self.argv]
        self.timeout = timeout
        self.t_start = time.time()
        self.t_sending: float | None = None
        self.sending = threading.Event()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._stderr, daemon=True).start()

    def _stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if "sending " in line and self.t_sending is None:
                self.t_sending = time.time()
                self.sending.set()
            print(f"    {line}", file=sys.stderr, flush=True)

    def wait(self) -> tuple[dict, float]:
        try:
            out, _ = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {"error": f"load generator did not finish in {self.timeout:.0f}s"}, time.time()
        t_exit = time.time()
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            res = json.loads(lines[-1])
        except (IndexError, ValueError):
            return {"error": f"load generator exited {self.proc.returncode} without JSON"}, t_exit
        if self.proc.returncode != 0:
            res.setdefault("error", f"exit code {self.proc.returncode}")
        return res, t_exit


# --------------------------------------------------------------------------------------------
# py-spy and the raw stacks

IDLE_LEAF_FILES = ("selectors.py",)
IDLE_LEAF_FUNCS = re.compile(
    r"^(Condition\.wait|Event\.wait|Thread\.join|Thread\._wait_for_tstate_lock|Queue\.get|"
    r"_worker|Semaphore\.acquire|BaseSelector\.select|.*Selector\.select|select|poll)$")
# blocking calls into C, seen as the calling line (only counted idle outside the main thread,
# where the asyncio loop's only wait is selectors.py's select)
IDLE_LEAF_LINE = re.compile(
    r"\.get\(\s*\)|\.get\(\s*block\s*=\s*True|\.wait\(|\.acquire\(|\bsleep\(|\.join\(\s*\)|"
    r"\.join\(\s*timeout|\bselect\(|\.poll\(|\.recv\(|\.accept\(")
# a call into msgspec (C code: no frame of its own) or json, seen as the calling line
CODEC_LINE = re.compile(
    r"msgspec\.|\bjson\.(dumps|loads)\(|\b\w+\.(encode|decode|encode_into)\((?!\s*\)|\s*[\"'])")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")

# categories asked for, then the rest; the first match walking from the leaf outwards decides
CATEGORIES = ("redis", "aiokafka", "pymongo", "sqlite", "websockets", "msgspec/json",
              "asyncio loop", "chatcluster", "prometheus_client", "other")


def lib_category(path: str) -> str | None:
    """Library category of a frame's file (py-spy shortens site-packages paths to
    package-relative ones, e.g. ``redis/asyncio/client.py``)."""
    p = path.replace("\\", "/")
    if "chatcluster/adapters/embedded/" in p:
        return "sqlite"
    if "chatcluster/" in p:
        return None  # our own code (other adapters included): stops the walk
    parts = p.split("/")
    for i, part in enumerate(parts):
        rest = parts[i:]
        if part == "site-packages":
            continue
        if part == "redis":
            return "redis"
        if part in ("aiokafka", "kafka"):
            return "aiokafka"
        if part in ("pymongo", "bson", "gridfs"):
            return "pymongo"
        if part == "sqlite3":
            return "sqlite"
        if part == "websockets":
            return "websockets"
        if part == "msgspec" or (part == "json" and len(rest) > 1):
            return "msgspec/json"
        if part == "prometheus_client":
            return "prometheus_client"
    return None


def is_chatcluster(path: str) -> bool:
    return "chatcluster/" in path.replace("\\", "/")


class SourceLines:
    """Reads the source line of a frame, resolving py-spy's shortened paths."""

    def __init__(self, roots: list[str]):
        self.roots = [r for r in roots if r and os.path.isdir(r)]
        self.cache: dict[str, list[str] | None] = {}

    def line(self, path: str, lineno: int) -> str:
        if path not in self.cache:
            found = None
            cands = [path] if os.path.isabs(path) else [os.path.join(r, path) for r in self.roots]
            for c in cands:
                if os.path.isfile(c):
                    with contextlib.suppress(OSError):
                        found = Path(c).read_text(errors="replace").splitlines()
                        break
            self.cache[path] = found
        lines = self.cache[path]
        return lines[lineno - 1] if lines and 0 < lineno <= len(lines) else ""


def parse_frame(s: str) -> tuple[str, str, int]:
    m = FRAME.match(s.strip())
    if not m:
        return s.strip(), "", 0
    return m.group("func"), m.group("file"), int(m.group("line"))


def classify(thread: str, frames: list[tuple[str, str, int]], src: SourceLines) -> str:
    """'idle' or a category for one sampled stack (root first, leaf last).

    Only the frames below the event loop's dispatch (the last ``Handle._run``: one task step
    or callback) are looked at, walking from the leaf outwards: the first library frame names
    the category; the first frame of our own code stops the walk ("chatcluster"). So a
    websockets frame at the root of a connection's task does not claim our handler's time,
    while our handler's call into redis, pymongo, aiokafka... is charged to that library."""
    if not frames:
        return "idle"
    func, path, lineno = frames[-1]
    main = thread.startswith("MainThread") or thread == ""
    base = os.path.basename(path)
    if base in IDLE_LEAF_FILES or (base in ("threading.py", "queue.py", "thread.py")
                                   and IDLE_LEAF_FUNCS.match(func)):
        return "idle"
    leaf_line = src.line(path, lineno) if path else ""
    if not main and leaf_line and IDLE_LEAF_LINE.search(leaf_line) \
            and not CODEC_LINE.search(leaf_line):
        return "idle"
    # a call from our code into msgspec (or json): the C time shows as the calling line
    if is_chatcluster(path) and leaf_line and CODEC_LINE.search(leaf_line) \
            and not re.search(r"\.(execute|executemany)\(", leaf_line):
        return "msgspec/json"
    k = max((i for i, f in enumerate(frames) if f[0] == "Handle._run"), default=-1)
    if k < 0 and any(f[0] == "BaseEventLoop._run_once" for f in frames):
        return "asyncio loop"  # the loop itself: _run_once, its timers and selector events
    task = frames[k + 1:]
    if not task:
        return "asyncio loop"
    for _f, f_path, _ in reversed(task):
        cat = lib_category(f_path)
        if cat:
            return cat
        if is_chatcluster(f_path):
            return "chatcluster"
    if "asyncio/" in path:
        return "asyncio loop"  # transports and streams (e.g. redis-py's and pymongo's reads)
    return "other"


def analyse_raw(raw: str, src: SourceLines) -> dict[str, Any]:
    cats: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
    total = idle = 0
    leaves: dict[str, int] = {}
    threads: dict[str, list[int]] = {}
    for raw_line in raw.splitlines():
        line = raw_line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        parts = stack.split(";")
        thread = ""
        if parts and parts[0].startswith("thread ("):
            thread = parts[0].split(": ", 1)[1] if ": " in parts[0] else ""
            parts = parts[1:]
            # py-spy puts the thread name as its own first frame after "thread (tid): "
        frames = [parse_frame(p) for p in parts if p]
        if frames and not frames[0][1] and frames[0][0] == thread:
            frames = frames[1:]
        cat = classify(thread, frames, src)
        total += count
        tkey = re.sub(r"[:\d]+$", "", thread) or "?"
        tt = threads.setdefault(tkey, [0, 0])
        tt[0] += count
        if cat == "idle":
            idle += count
            continue
        tt[1] += count
        cats[cat] += count
        f, p, ln = frames[-1] if frames else ("?", "", 0)
        key = f"{cat} | {f} ({p}:{ln})"
        leaves[key] = leaves.get(key, 0) + count
    active = total - idle
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:25]
    return {
        "samples_total": total,
        "samples_idle": idle,
        "samples_active": active,
        "by_category_samples": {k: v for k, v in cats.items()},
        "by_category_share": {k: round(v / active, 4) if active else None
                              for k, v in cats.items()},
        "threads": {k: {"samples": v[0], "active": v[1]} for k, v in threads.items()},
        "top_active_leaves": [{"leaf": k, "samples": v,
                               "share": round(v / active, 4) if active else None}
                              for k, v in top],
    }


def find_pyspy(explicit: str | None) -> str | None:
    for cand in (explicit, "/tmp/bench-venv/bin/py-spy", shutil.which("py-spy")):
        if cand and os.path.exists(cand):
            return cand
    log("py-spy not found: installing it into /tmp/bench-venv (pip)")
    try:
        if not os.path.exists("/tmp/bench-venv/bin/pip"):
            subprocess.run([sys.executable, "-m", "venv", "/tmp/bench-venv"], check=True,
                           timeout=300)
        subprocess.run(["/tmp/bench-venv/bin/pip", "install", "-q", "py-spy"], check=True,
                       timeout=600)
    except Exception as e:
        log(f"could not install py-spy: {e!r}; no profile")
        return None
    return "/tmp/bench-venv/bin/py-spy" if os.path.exists("/tmp/bench-venv/bin/py-spy") else None


# --------------------------------------------------------------------------------------------
# the production servers


def run_helper(python: str, argv: list[str], timeout: float) -> dict:
    try:
        r = subprocess.run([python, str(Path(__file__).resolve()), "_helper", *argv],
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"helper {argv[0]} timed out after {timeout:.0f}s"}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": f"helper {argv[0]} exit {r.returncode}: {r.stderr.strip()[-400:]}"}


# --------------------------------------------------------------------------------------------
# quiet machine


def foreign_activity(mine: set[int]) -> list[str]:
    out = []
    pat = re.compile(r"bench/run\.py|baseline_relay\.py|chatcluster up|pytest|loadgen-")
    mine = mine | set(_my_tree())
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in mine or int(d) == os.getpid():
            continue
        cmd = proc_cmd(int(d))
        if pat.search(cmd) and "bench/backends.py" not in cmd:
            out.append(f"{d}: {cmd[:100]}")
    return out


def _my_tree() -> list[int]:
    return descendants(os.getpid())


def wait_quiet(what: str, seconds: float, threshold: float, mine: set[int]) -> dict:
    """Wait up to `seconds` for every core to be under `threshold`% busy (2 s readings) and
    for other test runs (pytest: they may restart or stop the shared servers) to end."""
    until = time.monotonic() + seconds
    while True:
        a = cpu_times()
        time.sleep(2)
        busy = cpu_busy_pct(a, cpu_times())
        worst = max((v["busy_pct"] for k, v in busy.items() if k != "all"), default=0.0)
        others = foreign_activity(mine)
        tests = [o for o in others if "pytest" in o]
        if (worst <= threshold and not tests) or time.monotonic() >= until:
            if worst > threshold or tests:
                log(f"{what}: WARNING: machine still busy ({worst}% on a core"
                    + (f", {len(tests)} pytest processes" if tests else "") + ") after waiting")
            return {"busy_pct": {k: v["busy_pct"] for k, v in busy.items()},
                    "foreign_processes": others[:10]}
        log(f"{what}: waiting for a quiet machine (busiest core {worst}%"
            + (f"; others running: {'; '.join(o.split(': ', 1)[1][:60] for o in others[:3])}"
               if others else "") + ")")
        time.sleep(5)


# --------------------------------------------------------------------------------------------
# one system


def loadgen_base(args: argparse.Namespace) -> list[str]:
    return [f"-users={args.users}", f"-convs={args.convs}", f"-mix={args.mix}",
            f"-warmup={args.warmup}", f"-drain={args.drain}",
            f"-setup-timeout={args.setup_timeout}"]


def setup_times(lg: dict) -> dict:
    st = lg.get("setup") or {}
    return {k: round(st[k], 2) for k in ("tokens_s", "connect_s", "create_s", "setup_s")
            if isinstance(st.get(k), (int, float))}


def lat(lg: dict, kind: str = "deliver") -> dict:
    d = (lg.get("latency_ms") or {}).get(kind) or {}
    return {k: d.get(k) for k in ("p50", "p95", "p99", "max", "count")}


class System:
    def __init__(self, name: str, args: argparse.Namespace, exe: Path, work: Path):
        self.name = name
        self.args = args
        self.exe = exe
        self.work = work
        self.cluster: Cluster | None = None
        self.poller: MetricsPoller | None = None
        self.services: dict[str, int] = {}
        self.backend_env: dict[str, str] = {}
        self.namespace = ""
        self.store_url = ""
        self.at_rest: dict[str, float] = {}
        self.lg_target: list[str] = []
        self.lg_env: dict[str, str] = {}
        self.tracked: dict[int, str] = {}
        self.result: dict[str, Any] = {"name": name}

    # -- start / stop ----------------------------------------------------------------------
    def ensure_services(self) -> None:
        if self.backend_env:
            return
        svc, were_up = services_up(self.args.services_timeout, log)
        self.result["services_were_running"] = were_up
        self.backend_env = svc
        self.result["backends"] = {
            "store": svc["CHAT_STORE_URL"].rsplit("/", 1)[0] + "/chat_<namespace>",
            "bus": svc["CHAT_BUS_URL"], "cache": svc["CHAT_CACHE_URL"],
            "namespace": "bench<8 hex digits>, a fresh one per run"}

    def start(self, tag: str) -> dict[str, Any]:
        """A fresh cluster (and, for production, a fresh namespace: database, topics, keys),
        pinned, its consumers healthy. Every run gets its own: on FerretDB some reads scan
        whole collections, so what earlier runs stored would slow the later ones down."""
        a = self.args
        t0 = time.monotonic()
        info: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items()
               if k not in ("CHAT_STORE_URL", "CHAT_BUS_URL", "CHAT_CACHE_URL", "CHAT_NAMESPACE")}
        self.services = {}
        if self.name == "production":
            self.ensure_services()
            svc = self.backend_env
            self.namespace = "bench" + secrets.token_hex(4)
            self.store_url = svc["CHAT_STORE_URL"].rsplit("/", 1)[0] + f"/chat_{self.namespace}"
            env.update(CHAT_STORE_URL=self.store_url, CHAT_BUS_URL=svc["CHAT_BUS_URL"],
                       CHAT_CACHE_URL=svc["CHAT_CACHE_URL"], CHAT_NAMESPACE=self.namespace)
            info["namespace"] = self.namespace
            self.services = service_pids(svc["CHAT_SERVICES_DIR"])
            for name in SERVICES:
                pid = self.services.get(name)
                if pid is None:
                    raise RuntimeError(f"no live pid for {name} in {svc['CHAT_SERVICES_DIR']}")
                deadline = time.monotonic() + a.wait_quiet
                while (st := proc_stat(pid)) and st[0] == "T" and time.monotonic() < deadline:
                    log(f"production: {name} (pid {pid}) is stopped (SIGSTOP by someone "
                        "else's test?); waiting")
                    time.sleep(5)
                if st and st[0] == "T":
                    raise RuntimeError(f"{name} (pid {pid}) stays stopped")
        else:
            self.result["backends"] = {"store": "embedded (SQLite)", "bus": "embedded (SQLite)",
                                       "cache": "embedded (SQLite)"}
        c = self.cluster = Cluster(f"{self.name}-{tag}", a, env, self.work)
        ready = c.wait_ready(a.startup_timeout)
        self.lg_env = dict(os.environ, LOADGEN_APP_SECRET=str(ready["app_secret"]))
        self.lg_target = ["-target=chatcluster", f"-gateway={ready['gateway_url']}",
                          f"-app-id={ready['app_id']}"]
        # the consumers' url file appears once their probe listens
        deadline = time.monotonic() + 30
        while not (c.state_dir / "run" / "consumers.url").exists() \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        roles = c.discover()
        self.result["ready"] = {k: ready.get(k) for k in ("gateway_url", "socket_urls",
                                                          "app_id")}
        # pin: every process (every thread) of up's tree, and the production servers
        for pid in roles:
            AFFINITY.pin(pid, a.server_core, restore=False)
        for pid in self.services.values():
            AFFINITY.pin(pid, a.server_core, restore=True)
        self.tracked = dict(roles)
        self.tracked.update({pid: name for name, pid in self.services.items()})
        info["processes"] = [
            {"pid": p, "role": r, "cmd": proc_cmd(p)[:160],
             "affinity": sorted(os.sched_getaffinity(p)) if proc_stat(p) else None}
            for p, r in self.tracked.items()]
        log(f"{self.name}: processes pinned to core {a.server_core}: "
            + ", ".join(f"{p}({r})" for p, r in self.tracked.items()))
        if not c.consumers_url:
            raise RuntimeError("no consumers.url: cannot read the persistence lag")
        info["consumers_url"] = c.consumers_url
        self.poller = MetricsPoller(c.consumers_url)
        self.poller.start()
        self.wait_consumers(a.startup_timeout)
        info["startup_s"] = round(time.monotonic() - t0, 2)
        # at rest: what the started, unloaded system costs (polling, heartbeats, the shared
        # servers' own background work)
        k0, ta = {p: proc_ticks(p) for p in self.tracked}, time.time()
        time.sleep(a.at_rest)
        k1, tb = {p: proc_ticks(p) for p in self.tracked}, time.time()
        self.at_rest = {r: round(100 * (k1[p] - k0[p]) / CLK_TCK / (tb - ta), 1)
                        for p, r in self.tracked.items()
                        if k0.get(p) is not None and k1.get(p) is not None}
        info["at_rest_cpu_pct"] = self.at_rest
        log(f"{self.name}: ready in {info['startup_s']} s; consumers healthy; at rest CPU% "
            f"{self.at_rest} (total {sum(self.at_rest.values()):.1f}%)")
        if a.prime > 0:
            # a short unmeasured run: topics' leaders, group joins, connection pools, caches
            log(f"{self.name}: priming ({a.prime:g} s at 200 msgs/s, not measured)")
            prime = Loadgen(self.exe, a.gen_core, self.lg_target,
                            [*loadgen_base(a), "-warmup=0", f"-duration={a.prime}",
                             "-rate=200", f"-inflight={a.rate_inflight}"],
                            self.lg_env, a.setup_timeout + a.prime + 60)
            res, t_exit = prime.wait()
            self.poller.wait_drained(t_exit, a.lag_timeout, a.lag_confirm)
            info["prime"] = {k: res.get(k) for k in ("accepted_per_s", "errors", "error")}
        return info

    def wait_consumers(self, timeout: float) -> None:
        """Healthy consumers: /readyz answers 200, the persist lag gauge exists and no batch
        failed for 2 s (the gauge alone exists before the group has joined)."""
        assert self.cluster and self.poller
        deadline = time.monotonic() + timeout
        url = self.cluster.consumers_url.rstrip("/")
        good_since = None
        while time.monotonic() < deadline:
            try:
                text = http_get(url + "/metrics", 2.0)
                failures = prom(text, "chat_pipeline_failures_total") or 0.0
                lag = prom(text, "chat_pipeline_lag", group="persist")
                ready = True
                try:
                    http_get(url + "/readyz", 5.0)
                except Exception:
                    ready = False
            except Exception:
                failures, lag, ready = None, None, False
            ok = ready and lag is not None and failures is not None
            if ok and good_since and good_since[1] == failures:
                if time.monotonic() - good_since[0] >= 2.0:
                    return
            elif ok:
                good_since = (time.monotonic(), failures)
            else:
                good_since = None
            time.sleep(0.3)
        raise RuntimeError(f"the consumers did not become healthy in {timeout:.0f}s; log "
                           f"tail:\n{self.cluster.log_tail()}")

    def stop(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.poller:
            self.poller.stop()
            self.poller = None
        if self.cluster:
            self.cluster.stop()
            out["up_log_tail"] = self.cluster.log_tail(8)
        if self.services:
            out["affinity_restored"] = AFFINITY.restore_all()
        if self.namespace:
            log(f"{self.name}: cleaning up namespace {self.namespace} (database, topics, keys)")
            out["cleanup"] = run_helper(self.args.cc_python, [
                "cleanup", self.namespace, self.store_url,
                self.backend_env["CHAT_BUS_URL"], self.backend_env["CHAT_CACHE_URL"]], 120)
            log(f"{self.name}: cleanup: {out['cleanup']}")
            self.namespace = ""
        if self.cluster and not self.args.keep_state:
            shutil.rmtree(self.cluster.state_dir, ignore_errors=True)
        self.cluster = None
        return out

    # -- measurements ----------------------------------------------------------------------
    def refresh_services(self) -> None:
        """Someone else may have restarted a shared server: pin (and track) the new pid."""
        if not self.services:
            return
        now = service_pids(self.backend_env["CHAT_SERVICES_DIR"])
        for name, pid in now.items():
            if self.services.get(name) != pid:
                log(f"{self.name}: {name} now runs as pid {pid} (was "
                    f"{self.services.get(name)}): pinning it")
                self.tracked.pop(self.services.get(name, -1), None)
                self.services[name] = pid
                self.tracked[pid] = name
                AFFINITY.pin(pid, self.args.server_core, restore=True)

    def refresh_tracked(self) -> None:
        """A child restarted by up has a new pid: track and pin it too."""
        assert self.cluster
        for pid in descendants(self.cluster.proc.pid):
            if pid not in self.tracked:
                self.cluster.discover()
                self.tracked[pid] = self.cluster.roles.get(pid, proc_cmd(pid)[:60])
                AFFINITY.pin(pid, self.args.server_core, restore=False)
                log(f"{self.name}: new process {pid} ({self.tracked[pid]}) pinned")

    def cpu_window(self, smp: ProcSampler, t0: float, t1: float, msgs: float | None
                   ) -> dict[str, Any]:
        w = smp.window(t0, t1)
        if not w:
            return {}
        (ta, ka, ca), (tb, kb, cb) = w
        dt = tb - ta
        procs = {}
        total = 0.0
        for pid, role in self.tracked.items():
            if pid in ka and pid in kb:
                cpu_s = (kb[pid] - ka[pid]) / CLK_TCK
                total += cpu_s
                procs[role] = {"pid": pid, "cpu_s": round(cpu_s, 3),
                               "cpu_pct": round(100 * cpu_s / dt, 1),
                               "us_per_msg": round(1e6 * cpu_s / msgs, 1) if msgs else None}
                if msgs and role in self.at_rest:
                    net = max(0.0, cpu_s - self.at_rest[role] / 100 * dt)
                    procs[role]["us_per_msg_above_rest"] = round(1e6 * net / msgs, 1)
        cores = cpu_busy_pct(ca, cb)
        core = str(self.args.server_core)
        rest = sum(self.at_rest.get(r, 0.0) for r in procs)
        out: dict[str, Any] = {"seconds": round(dt, 2), "processes": procs,
                               "total_cpu_pct": round(100 * total / dt, 1),
                               "at_rest_cpu_pct": round(rest, 1),
                               "total_us_per_msg": round(1e6 * total / msgs, 1) if msgs else None,
                               "cores": cores}
        if core in cores:
            other = cores[core]["busy_pct"] - cores[core]["irq_pct"] - 100 * total / dt
            out["other_load_on_server_core_pct"] = round(max(0.0, other), 1)
        gcore = str(self.args.gen_core)
        if gcore in cores and -1 in ka and -1 in kb:
            # a harness child that ended between two samples makes this read a little high
            ours = 100 * (kb[-1] - ka[-1]) / CLK_TCK / dt
            out["harness_cpu_pct_on_generator_core"] = round(ours, 1)
            other = cores[gcore]["busy_pct"] - cores[gcore]["irq_pct"] - ours
            out["other_load_on_generator_core_pct"] = round(max(0.0, other), 1)
        return out

    def one_run(self, key: str, label: str, extra: list[str], duration: float,
                mongo: bool = False, profile: bool = False) -> dict[str, Any]:
        a = self.args
        noisy: list[dict] = []
        for attempt in range(a.retry_noisy + 1):
            info: dict[str, Any] = {}
            try:
                info = self.start(f"{key}-{attempt}")
                run = self._one_attempt(label, extra, duration, mongo, profile)
            except Exception as e:
                log(f"{self.name}: {label}: FAILED: {e}")
                run = {"label": label, "error": str(e)}
            finally:
                info.update(self.stop())
            run["cluster"] = info
            cw = run.get("cpu_window") or {}
            other = max(cw.get("other_load_on_server_core_pct") or 0,
                        cw.get("other_load_on_generator_core_pct") or 0)
            bad = (run.get("services_disturbed") or run.get("error")
                   or (run.get("loadgen") or {}).get("error"))
            if (other <= NOISY_PCT and not bad) or attempt == a.retry_noisy:
                break
            log(f"{self.name}: {label}: disturbed ({other}% of a core went to other "
                f"processes{'; ' + str(bad)[:200] if bad else ''}); running it again")
            noisy.append({"other_load_on_server_core_pct": other, "disturbed": bad,
                          "loadgen": run.get("loadgen")})
            wait_quiet(self.name, a.wait_quiet, a.quiet_pct, set())
        if noisy:
            run["noisy_attempts"] = noisy
        return run

    def _one_attempt(self, label: str, extra: list[str], duration: float, mongo: bool,
                     profile: bool) -> dict[str, Any]:
        a = self.args
        assert self.cluster and self.poller
        if not self.cluster.alive():
            raise RuntimeError(f"{self.name}: up is gone; log tail:\n{self.cluster.log_tail()}")
        self.refresh_tracked()
        self.refresh_services()
        log(f"{self.name}: {label}")
        run: dict[str, Any] = {"label": label}
        mp = None
        if mongo and self.name == "production":
            mp = MongoPoller(a.cc_python, self.store_url.rsplit("/", 1)[0] + "/",
                             duration + a.setup_timeout + a.lag_timeout + 120,
                             self.backend_env.get("CHAT_CACHE_URL", ""))
            t_mp = time.time() + 10
            while not mp.samples and time.time() < t_mp:
                time.sleep(0.1)
            bg0 = time.time()
            time.sleep(a.background_s)  # other clients' commands while our cluster is idle
            bg1 = time.time()
        argv = [*loadgen_base(a), f"-duration={duration}", *extra]
        timeout = a.setup_timeout + a.warmup + duration + a.drain + 60
        with ProcSampler(self.tracked, 0.5, self.services) as smp:
            lg_run = Loadgen(self.exe, a.gen_core, self.lg_target, argv, self.lg_env, timeout)
            if profile:
                run["profile"] = self.profile(lg_run)
            lg, t_exit = lg_run.wait()
            run["loadgen"] = lg
            win = lg.get("window_unix") or [lg_run.t_start, t_exit]
            t_send_stop = win[1]
            t_zero = self.poller.wait_drained(t_exit, a.lag_timeout, a.lag_confirm)
            t_end = t_zero if t_zero is not None else time.time()
        during = [s[1] for s in self.poller.since(lg_run.t_start) if s[0] <= t_exit and s[1]
                  is not None]
        at_exit = self.poller.at(t_exit)
        drain = None if t_zero is None else max(0.0, t_zero - t_exit)
        drain_send = None if t_zero is None else max(0.0, t_zero - t_send_stop)
        run["lag"] = {
            "max_during_run": max(during, default=None),
            "at_generator_exit": at_exit[1] if at_exit else None,
            "drain_s_from_generator_exit": None if drain is None else round(drain, 2),
            "drain_s_from_send_stop": None if drain_send is None else round(drain_send, 2),
            "drained": t_zero is not None,
            "keeps_up_5s": bool(drain_send is not None and drain_send <= 5.0),
            "generator_exit_after_send_stop_s": round(t_exit - t_send_stop, 2),
            "resolution_note": "gauge refreshed every 0.5 s, polled every 0.1 s after the "
                               "generator exits; zero confirmed for "
                               f"{a.lag_confirm:g} s",
        }
        # persisted records and batches, from the start of the measured window to drained
        p0, p1 = self.poller.at(win[0]), self.poller.at(t_end)
        if p0 and p1 and p0[2] is not None and p1[2] is not None:
            rec = p1[2] - p0[2]
            bat = (p1[3] or 0) - (p0[3] or 0)
            run["persist"] = {"records": int(rec), "batches": int(bat),
                              "records_per_batch": round(rec / bat, 1) if bat else None,
                              "interval_unix": [round(p0[0], 3), round(p1[0], 3)]}
        if smp.incidents:
            run["services_disturbed"] = smp.incidents
            log(f"{self.name}: {label}: WARNING: shared servers disturbed: {smp.incidents}")
        acc = (lg.get("counts") or {}).get("accepted_in_window")
        run["cpu_window"] = self.cpu_window(smp, win[0], win[1], acc)
        run["cpu_window_to_drained"] = self.cpu_window(
            smp, win[0], t_end, run.get("persist", {}).get("records") or acc)
        if mp:
            time.sleep(0.6)
            m0, m1 = mp.at(win[0]), mp.at(t_end, after=True)
            b0, b1 = mp.at(bg0, after=True), mp.at(bg1)
            mp.stop()
            # persisted records at the same instants as the two serverStatus readings
            c0 = self.poller.at(m0["t"]) if m0 else None
            c1 = self.poller.at(m1["t"]) if m1 else None
            persist = {}
            if c0 and c1 and c0[2] is not None and c1[2] is not None:
                persist = {"records": int(c1[2] - c0[2]),
                           "batches": int((c1[3] or 0) - (c0[3] or 0))}
            run["mongo"] = self.mongo_figures(m0, m1, b0, b1, persist)
        lagd = run["lag"]
        log(f"{self.name}: {label}: accepted {lg.get('accepted_per_s')} msgs/s, delivered "
            f"{lg.get('delivered_per_s')} ev/s, deliver p50/p99 {lat(lg)['p50']}/"
            f"{lat(lg)['p99']} ms, errors {lg.get('errors')}; lag max {lagd['max_during_run']}, "
            f"drained {lagd['drain_s_from_send_stop']} s after sending stopped; server CPU "
            f"{run['cpu_window'].get('total_cpu_pct')}%"
            + f", other load on servers'/generator's core "
              f"{run['cpu_window'].get('other_load_on_server_core_pct')}/"
              f"{run['cpu_window'].get('other_load_on_generator_core_pct')}%"
            + f"; setup {setup_times(lg)}"
            + (f" ERROR {lg['error']}" if "error" in lg else ""))
        time.sleep(a.cooldown)
        return run

    @staticmethod
    def mongo_figures(m0: dict | None, m1: dict | None, b0: dict | None, b1: dict | None,
                      persist: dict) -> dict[str, Any]:
        if not (m0 and m1):
            return {"error": "no serverStatus readings"}
        d = mongo_delta(m0, m1)
        dt = m1["t"] - m0["t"]
        out: dict[str, Any] = {"interval_s": round(dt, 2), "commands": d,
                               "source": m1.get("source")}
        bg: dict[str, float] = {}
        if b0 and b1 and b1["t"] > b0["t"]:
            bd = mongo_delta(b0, b1)
            bg = {k: v / (b1["t"] - b0["t"]) for k, v in bd.items()}
            out["background_per_s"] = {k: round(v, 2) for k, v in bg.items()}
        writes = sum(d.get(k, 0) for k in WRITE_COMMANDS)
        writes_bg = writes - sum(bg.get(k, 0.0) for k in WRITE_COMMANDS) * dt
        out["write_commands"] = writes
        out["write_commands_minus_background"] = round(writes_bg, 1)
        recs = persist.get("records")
        if recs:
            out["records_persisted"] = recs
            out["write_commands_per_message"] = round(writes / recs, 4)
            out["write_commands_per_message_minus_background"] = round(writes_bg / recs, 4)
            out["inserts_per_message"] = round(d.get("insert", 0) / recs, 4)
        if persist.get("batches"):
            out["write_commands_per_persist_batch"] = round(writes / persist["batches"], 2)
            out["records_per_persist_batch"] = round(recs / persist["batches"], 1) if recs \
                else None
        if "redis" in m0 and "redis" in m1:
            rd = mongo_delta(m0, m1, "redis")
            rbg: dict[str, float] = {}
            if b0 and b1 and "redis" in b0 and "redis" in b1 and b1["t"] > b0["t"]:
                rbg = {k: v / (b1["t"] - b0["t"])
                       for k, v in mongo_delta(b0, b1, "redis").items()}
            # INFO itself is our poller's
            redis_cmds = {k: round(v - rbg.get(k, 0.0) * dt, 1) for k, v in rd.items()
                          if k != "info"}
            out["redis_commands_minus_background"] = redis_cmds
            if recs:
                out["redis_commands_per_message"] = {
                    k: round(v / recs, 3) for k, v in sorted(redis_cmds.items(),
                                                             key=lambda kv: -kv[1]) if v > 0}
                out["redis_commands_per_message_total"] = round(
                    sum(v for v in redis_cmds.values() if v > 0) / recs, 3)
        return out

    def profile(self, lg_run: Loadgen) -> dict[str, Any]:
        """py-spy on socket-1 and the consumers while the generator sends at a fixed rate."""
        a = self.args
        assert self.cluster
        out: dict[str, Any] = {}
        if not a.pyspy:
            return {"error": "py-spy unavailable"}
        if not lg_run.sending.wait(a.setup_timeout + 10):
            return {"error": "the generator never started sending"}
        time.sleep(a.warmup + 0.5)  # past the warm-up, into the measured window
        targets = {"socket-1": self.cluster.pid_of("socket-1"),
                   "consumers": self.cluster.pid_of("consumers")}
        pdir = self.work / "profiles"
        pdir.mkdir(exist_ok=True)
        spies = {}
        sends0 = self.send_count()
        t0 = time.time()
        ticks0 = {p: proc_ticks(p) for p in self.tracked}
        sched0 = {role: schedstat(pid) for role, pid in targets.items() if pid}
        for role, pid in targets.items():
            if pid is None:
                out[role] = {"error": "process not found"}
                continue
            path = pdir / f"{self.cluster.name}-{role}.txt"  # e.g. production-profile-0-...
            argv = ["taskset", "-c", str(a.gen_core), a.pyspy, "record", "-f", "raw",
                    "--nonblocking", "--idle", "--threads", "-r", str(a.profile_rate),
                    "-d", str(a.profile_seconds), "-p", str(pid), "-o", str(path)]
            errf = open(path.with_suffix(".log"), "wb")  # noqa: SIM115
            spies[role] = (pid, path, subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                       stdout=errf, stderr=errf), errf)
        for _pid, _path, proc, errf in spies.values():
            try:
                proc.wait(a.profile_seconds + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            errf.close()
        t1 = time.time()
        ticks1 = {p: proc_ticks(p) for p in self.tracked}
        sched1 = {role: schedstat(pid) for role, pid in targets.items() if pid}
        sends1 = self.send_count()
        msgs = (sends1 - sends0) if sends0 is not None and sends1 is not None else None
        out["window_s"] = round(t1 - t0, 2)
        out["messages"] = msgs
        out["messages_source"] = ("sum over the socket replicas of "
                                  "chat_socket_op_seconds_count{op=\"message.send\"}")
        out["rate_hz"] = a.profile_rate
        cpu = {}
        for pid, role in self.tracked.items():
            if ticks0.get(pid) is not None and ticks1.get(pid) is not None:
                s = (ticks1[pid] - ticks0[pid]) / CLK_TCK
                cpu[role] = {"cpu_s": round(s, 3),
                             "us_per_msg": round(1e6 * s / msgs, 1) if msgs else None}
                if msgs and role in self.at_rest:
                    net = max(0.0, s - self.at_rest[role] / 100 * (t1 - t0))
                    cpu[role]["us_per_msg_above_rest"] = round(1e6 * net / msgs, 1)
        out["cpu_per_process"] = cpu
        src = SourceLines(a.source_roots)
        for role, (pid, path, proc, _) in spies.items():
            if not path.exists():
                tail = path.with_suffix(".log").read_text(errors="replace")[-400:]
                out[role] = {"error": f"py-spy wrote nothing (exit {proc.returncode}): {tail}"}
                continue
            raw = path.read_text(errors="replace")
            res = analyse_raw(raw, src)
            res["pid"] = pid
            cpu_s = cpu.get(role, {}).get("cpu_s")
            res["cpu_s"] = cpu_s
            res["sampled_active_s"] = round(res["samples_active"] / a.profile_rate, 2)
            s0, s1 = sched0.get(role), sched1.get(role)
            if s0 and s1:
                # time the process's threads were runnable but another process had the core:
                # py-spy sees such a thread as active, at the line where it was preempted
                res["schedstat_on_cpu_s"] = round(s1[0] - s0[0], 3)
                res["schedstat_runqueue_wait_s"] = round(s1[1] - s0[1], 3)
                if s1[0] > s0[0]:
                    res["sampled_active_over_on_cpu"] = round(
                        res["sampled_active_s"] / (s1[0] - s0[0]), 2)
            if cpu_s is not None and msgs:
                res["us_per_msg_total"] = round(1e6 * cpu_s / msgs, 1)
                res["us_per_msg"] = {
                    k: (round(v * cpu_s * 1e6 / msgs, 1) if v is not None else None)
                    for k, v in res["by_category_share"].items()}
            res["raw_file"] = path.name + ".gz"
            out[role] = res
            share = res["by_category_share"]
            log(f"{self.name}: profile {role}: {res['samples_active']} active of "
                f"{res['samples_total']} samples, CPU {cpu_s} s (run-queue wait "
                f"{res.get('schedstat_runqueue_wait_s')} s) for {msgs} msgs; "
                + ", ".join(f"{k} {100 * (share[k] or 0):.1f}%" for k in CATEGORIES
                            if share.get(k)))
        return out

    def send_count(self) -> float | None:
        assert self.cluster
        total = 0.0
        for url in self.cluster.socket_metrics:
            try:
                v = prom(http_get(url, 2.0), "chat_socket_op_seconds_count", op=SEND_OP)
            except Exception:
                return None
            total += v or 0.0
        return total

    def run_all(self) -> None:
        a = self.args
        r = self.result
        base = f"-inflight={a.rate_inflight}"
        klo, khi = f"rate_{a.low_rate:g}", f"rate_{a.high_rate:g}"
        if "saturation" in a.runs:
            r["saturation"] = self.one_run(
                "saturation", "(a) saturation", ["-rate=0", f"-inflight={a.inflight}"],
                a.sat_duration)
        if "rate500" in a.runs:
            r[klo] = self.one_run(klo, f"(b) {a.low_rate:g} msgs/s",
                                  [f"-rate={a.low_rate}", base], a.duration)
        if "rate1000" in a.runs:
            r[khi] = self.one_run(khi, f"(c) {a.high_rate:g} msgs/s",
                                  [f"-rate={a.high_rate}", base], a.duration, mongo=True)
        if "profile" in a.runs:
            r["profile_run"] = self.one_run(
                "profile", f"(d) profile at {a.low_rate:g} msgs/s",
                [f"-rate={a.low_rate}", base], a.profile_seconds + a.warmup + 3, profile=True)
        if "profile" in a.runs and a.profile_low_rate != "0":
            if a.profile_low_rate == "auto":
                # where this system's core has headroom: py-spy's samples are then CPU time
                sat = _g(r, "saturation", "loadgen", "accepted_per_s") or 1000.0
                rate = float(max(10, min(100, round(0.1 * sat, -1))))
            else:
                rate = float(a.profile_low_rate)
            r["profile_low_run"] = self.one_run(
                "profile_low", f"(d2) profile at {rate:g} msgs/s",
                [f"-rate={rate}", base], a.profile_seconds + a.warmup + 3, profile=True)


# --------------------------------------------------------------------------------------------
# summary and plot


def _g(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def profile_summary(r: dict, key: str, name: str) -> dict[str, Any] | None:
    prof = _g(r, key, "profile") or {}
    if not prof or not prof.get("messages"):
        return None
    nrep = len(_g(r, "ready", "socket_urls") or []) or 1
    lg = _g(r, key, "loadgen") or {}
    per: dict[str, Any] = {"offered_rate": lg.get("offered_rate"),
                           "accepted_per_s": lg.get("accepted_per_s"),
                           "server_cpu_pct": _g(r, key, "cpu_window", "total_cpu_pct"),
                           "messages": prof.get("messages"), "window_s": prof.get("window_s"),
                           "socket_replicas": nrep}
    cluster: dict[str, float] = {}
    for role in ("socket-1", "consumers"):
        p = prof.get(role) or {}
        if "us_per_msg" in p:
            per[role] = {"us_per_msg_total": p.get("us_per_msg_total"),
                         "idle_share": round(p["samples_idle"] / p["samples_total"], 3)
                         if p.get("samples_total") else None,
                         "sampled_active_over_on_cpu": p.get("sampled_active_over_on_cpu"),
                         "runqueue_wait_s": p.get("schedstat_runqueue_wait_s"),
                         "by_category_us_per_msg": p["us_per_msg"],
                         "by_category_share": p["by_category_share"]}
            mult = nrep if role.startswith("socket") else 1
            for k, v in p["us_per_msg"].items():
                cluster[k] = cluster.get(k, 0.0) + (v or 0.0) * mult
    per["cluster_estimate_us_per_msg"] = {
        "note": f"socket-1 x {nrep} replicas + consumers (replicas assumed alike)",
        **{k: round(v, 1) for k, v in cluster.items()}}
    procs = prof.get("cpu_per_process") or {}
    per["cpu_us_per_msg_by_process"] = {k: v.get("us_per_msg") for k, v in procs.items()}
    per["cpu_us_per_msg_by_process_above_rest"] = {
        k: v.get("us_per_msg_above_rest") for k, v in procs.items()}
    server = {k: v.get("us_per_msg") for k, v in procs.items() if k in SERVICES}
    if name == "production":
        per["backend_time_per_msg_us"] = {
            "kafka": {"client_aiokafka": round(cluster.get("aiokafka", 0), 1),
                      "server_cpu": server.get("kafka")},
            "mongodb": {"client_pymongo": round(cluster.get("pymongo", 0), 1),
                        "server_cpu_ferretdb": server.get("ferretdb")},
            "redis": {"client_redis": round(cluster.get("redis", 0), 1),
                      "server_cpu": server.get("redis")},
        }
    else:
        per["backend_time_per_msg_us"] = {
            "sqlite": {"in_process": round(cluster.get("sqlite", 0), 1)}}
    return per


def summarize(results: dict, args: argparse.Namespace) -> dict:
    s: dict[str, Any] = {}
    for name in ("embedded", "production"):
        r = results.get(name)
        if not isinstance(r, dict):
            continue
        sat = _g(r, "saturation", "loadgen") or {}
        klo, khi = f"rate_{args.low_rate:g}", f"rate_{args.high_rate:g}"
        r5 = _g(r, klo, "loadgen") or {}
        r1 = _g(r, khi, "loadgen") or {}
        row: dict[str, Any] = {
            "saturation": {
                "accepted_per_s": sat.get("accepted_per_s"),
                "delivered_per_s": sat.get("delivered_per_s"),
                "deliver_ms": lat(sat), "ack_ms": lat(sat, "ack"),
                "errors": sat.get("errors"), "delivery_ratio": sat.get("delivery_ratio"),
                "generator_setup_s": setup_times(sat),
                "lag_max": _g(r, "saturation", "lag", "max_during_run"),
                "lag_drain_s_from_send_stop": _g(r, "saturation", "lag",
                                                 "drain_s_from_send_stop"),
                "lag_drain_s_from_generator_exit": _g(r, "saturation", "lag",
                                                      "drain_s_from_generator_exit"),
                "persistence_keeps_up_5s": _g(r, "saturation", "lag", "keeps_up_5s"),
                "server_cpu_pct": _g(r, "saturation", "cpu_window", "total_cpu_pct"),
                "server_cpu_us_per_msg": _g(r, "saturation", "cpu_window", "total_us_per_msg"),
                "other_load_on_server_core_pct": _g(r, "saturation", "cpu_window",
                                                    "other_load_on_server_core_pct"),
            },
            f"rate_{args.low_rate:g}": {
                "accepted_per_s": r5.get("accepted_per_s"),
                "deliver_ms": lat(r5), "ack_ms": lat(r5, "ack"), "errors": r5.get("errors"),
                "generator_setup_s": setup_times(r5),
                "p99_le_50ms": (lat(r5)["p99"] is not None and lat(r5)["p99"] <= 50.0),
                "server_cpu_pct": _g(r, klo, "cpu_window", "total_cpu_pct"),
                "cpu_us_per_msg_by_process": {
                    k: v.get("us_per_msg") for k, v in
                    (_g(r, klo, "cpu_window", "processes") or {}).items()},
                "other_load_on_server_core_pct": _g(r, klo, "cpu_window",
                                                    "other_load_on_server_core_pct"),
            },
            f"rate_{args.high_rate:g}": {
                "accepted_per_s": r1.get("accepted_per_s"),
                "sent_per_s": r1.get("sent_per_s"),
                "deliver_ms": lat(r1), "errors": r1.get("errors"),
                "generator_setup_s": setup_times(r1),
                "lag_max": _g(r, khi, "lag", "max_during_run"),
                "lag_drain_s_from_send_stop": _g(r, khi, "lag",
                                                 "drain_s_from_send_stop"),
                "persistence_keeps_up_5s": _g(r, khi, "lag", "keeps_up_5s"),
                "records_per_persist_batch": _g(r, khi, "persist", "records_per_batch"),
                "store_write_commands_per_message": _g(r, khi, "mongo",
                                                       "write_commands_per_message"),
                "store_write_commands_per_message_minus_background": _g(
                    r, khi, "mongo", "write_commands_per_message_minus_background"),
                "store_commands": _g(r, khi, "mongo", "commands"),
                "redis_commands_per_message": _g(r, khi, "mongo", "redis_commands_per_message"),
                "redis_commands_per_message_total": _g(r, khi, "mongo",
                                                       "redis_commands_per_message_total"),
                "server_cpu_us_per_msg_by_process": {
                    k: v.get("us_per_msg") for k, v in
                    (_g(r, khi, "cpu_window", "processes") or {}).items()},
                "other_load_on_server_core_pct": _g(r, khi, "cpu_window",
                                                    "other_load_on_server_core_pct"),
            },
        }
        for key in ("saturation", klo, khi, "profile_run", "profile_low_run"):
            rest = _g(r, key, "cluster", "at_rest_cpu_pct")
            if rest:
                row["at_rest_cpu_pct"] = {**rest, "total": round(sum(rest.values()), 1)}
                break
        row[klo]["cpu_us_per_msg_by_process_above_rest"] = {
            k: v.get("us_per_msg_above_rest") for k, v in
            (_g(r, klo, "cpu_window", "processes") or {}).items()}
        acc1 = r1.get("accepted_per_s") or 0
        row["target_1000_per_s_with_persistence"] = {
            "fixed_rate_accepted_ge_98pct_of_offered": acc1 >= 0.98 * args.high_rate,
            "fixed_rate_drain_le_5s": _g(r, khi, "lag", "keeps_up_5s"),
            "saturation_accepted_ge_1000": (sat.get("accepted_per_s") or 0) >= 1000,
            "saturation_drain_le_5s": _g(r, "saturation", "lag", "keeps_up_5s"),
        }
        for key, out_key in (("profile_run", "profile"), ("profile_low_run", "profile_low")):
            per = profile_summary(r, key, name)
            if per:
                row[out_key] = per
        s[name] = row
    e, p = s.get("embedded", {}), s.get("production", {})
    ratio = {}
    for key in ("accepted_per_s", "delivered_per_s"):
        ev, pv = _g(e, "saturation", key), _g(p, "saturation", key)
        if ev and pv:
            ratio[f"saturation_{key}"] = round(pv / ev, 3)
    ev, pv = _g(e, f"rate_{args.high_rate:g}", "accepted_per_s"), \
        _g(p, f"rate_{args.high_rate:g}", "accepted_per_s")
    if ev and pv:
        ratio[f"rate_{args.high_rate:g}_accepted_per_s"] = round(pv / ev, 3)
    s["ratio_production_over_embedded"] = ratio
    return s


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[1]:
        ax.legend(**kw)


def plot(results: dict, png: Path, args: argparse.Namespace) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not importable: no plot (run with /tmp/bench-venv/bin/python)")
        return
    summ = results["summary"]
    names = [n for n in ("embedded", "production") if n in summ]
    colors = {"embedded": "tab:blue", "production": "tab:red"}
    hi, lo = f"rate_{args.high_rate:g}", f"rate_{args.low_rate:g}"
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    ax = axes[0][0]
    groups = ["saturation\naccepted msgs/s", "saturation\ndelivered ev/s",
              f"{args.high_rate:g} msgs/s offered\naccepted msgs/s"]
    w = 0.38
    for i, n in enumerate(names):
        vals = [_g(summ, n, "saturation", "accepted_per_s") or 0,
                _g(summ, n, "saturation", "delivered_per_s") or 0,
                _g(summ, n, hi, "accepted_per_s") or 0]
        xs = [j + (i - (len(names) - 1) / 2) * w for j in range(len(groups))]
        bars = ax.bar(xs, vals, w, color=colors[n], label=n)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(1000, color="gray", ls="--", lw=0.8)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    r = summ.get("ratio_production_over_embedded", {})
    ax.set_title("throughput (production/embedded at saturation: accepted "
                 f"{r.get('saturation_accepted_per_s')}, delivered "
                 f"{r.get('saturation_delivered_per_s')})", fontsize=9)
    _legend(ax, fontsize=8)

    ax = axes[0][1]
    groups = [f"p50 @ {args.low_rate:g}/s", f"p99 @ {args.low_rate:g}/s",
              f"p99 @ {args.high_rate:g}/s", "p99 saturation"]
    for i, n in enumerate(names):
        vals = [_g(summ, n, lo, "deliver_ms", "p50"), _g(summ, n, lo, "deliver_ms", "p99"),
                _g(summ, n, hi, "deliver_ms", "p99"),
                _g(summ, n, "saturation", "deliver_ms", "p99")]
        vals = [v if v else 0.01 for v in vals]
        xs = [j + (i - (len(names) - 1) / 2) * w for j in range(len(groups))]
        bars = ax.bar(xs, vals, w, color=colors[n], label=n)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axhline(50, color="gray", ls="--", lw=0.8, label="50 ms target")
    ax.set_yscale("log")
    ax.set_ylabel("send -> deliver (ms)")
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_title("send -> deliver latency", fontsize=9)
    _legend(ax, fontsize=8, loc="upper left")

    ax = axes[0][2]
    groups = ["after saturation", f"after {args.high_rate:g} msgs/s"]
    for i, n in enumerate(names):
        vals = [_g(summ, n, "saturation", "lag_drain_s_from_send_stop"),
                _g(summ, n, hi, "lag_drain_s_from_send_stop")]
        vals = [v if v is not None else args.lag_timeout for v in vals]
        xs = [j + (i - (len(names) - 1) / 2) * w for j in range(len(groups))]
        bars = ax.bar(xs, vals, w, color=colors[n], label=n)
        ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    ax.axhline(5, color="gray", ls="--", lw=0.8, label="5 s target")
    ax.set_xticks(range(len(groups)), groups, fontsize=9)
    ax.set_ylabel("s from end of sending to persist lag 0")
    ax.set_title("persistence catching up", fontsize=9)
    _legend(ax, fontsize=8)

    cmap = plt.get_cmap("tab10")
    # (system, summary key, rate) for every profile taken
    profs = [(n, k, _g(summ, n, k, "offered_rate")) for n in names
             for k in ("profile", "profile_low") if _g(summ, n, k)]
    shade = {("embedded", "profile"): "tab:blue", ("embedded", "profile_low"): "lightsteelblue",
             ("production", "profile"): "tab:red", ("production", "profile_low"): "lightsalmon"}

    ax = axes[1][0]
    rows, labels = [], []
    for n, k, rate in profs:
        for role in ("socket-1", "consumers"):
            v = _g(summ, n, k, role, "by_category_us_per_msg")
            if v:
                ratio = _g(summ, n, k, role, "sampled_active_over_on_cpu")
                rows.append(v)
                labels.append(f"{n} {role}\n@ {rate:g}/s (sampled/CPU {ratio})")
    left = [0.0] * len(rows)
    for ci, c in enumerate(CATEGORIES):
        vals = [(row.get(c) or 0) for row in rows]
        if any(vals):
            ax.barh(range(len(rows)), vals, left=left, color=cmap(ci % 10), label=c)
            left = [x + y for x, y in zip(left, vals, strict=True)]
    for i, total in enumerate(left):
        ax.annotate(f"{total:.0f} µs", (total, i), fontsize=7, va="center",
                    xytext=(3, 0), textcoords="offset points")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("CPU µs per message in this process (share of py-spy samples x CPU s / msgs)",
                  fontsize=8)
    ax.set_title("py-spy: where each process's CPU goes", fontsize=9)
    _legend(ax, fontsize=6, loc="upper right", ncol=2)

    ax = axes[1][1]
    groups = ["redis", "aiokafka", "pymongo", "sqlite", "websockets", "msgspec/json"]
    w2 = 0.8 / max(1, len(profs))
    for i, (n, k, rate) in enumerate(profs):
        vals = [_g(summ, n, k, "cluster_estimate_us_per_msg", g) or 0 for g in groups]
        xs = [j + (i - (len(profs) - 1) / 2) * w2 for j in range(len(groups))]
        bars = ax.bar(xs, vals, w2, color=shade.get((n, k)), label=f"{n} @ {rate:g}/s")
        ax.bar_label(bars, fmt="%.0f", fontsize=6)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel("client-side CPU µs per message")
    ax.set_title("client libraries, whole cluster (socket-1 x replicas + consumers)", fontsize=9)
    _legend(ax, fontsize=7)

    ax = axes[1][2]
    order = ["supervisor", "gateway", "socket-1", "socket-2", "consumers", *SERVICES]
    seen: set[str] = set()
    for i, (n, k, _rate) in enumerate(profs):
        procs = _g(summ, n, k, "cpu_us_per_msg_by_process") or {}
        bottom = 0.0
        for oi, role in enumerate(order):
            v = procs.get(role) or 0
            if v:
                ax.bar(i, v, 0.6, bottom=bottom, color=cmap(oi % 10),
                       label=None if role in seen else role)
                seen.add(role)
                if v > 60:
                    ax.annotate(f"{role} {v:.0f}", (i, bottom + v / 2), ha="center",
                                va="center", fontsize=6)
                bottom += v
        ax.annotate(f"{bottom:.0f} µs/msg", (i, bottom), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(profs)), [f"{n}\n@ {r:g}/s" for n, _k, r in profs], fontsize=8)
    ax.set_ylabel("CPU µs per message (all on one core)")
    ax.set_title("CPU per message by process (/proc, during the profiles)", fontsize=9)
    _legend(ax, fontsize=7)

    m = results["machine"]
    fig.suptitle(f"chatcluster backends {results['timestamp']}: embedded vs production "
                 f"(Redis, Kafka, FerretDB), servers on core {args.server_core}, generator on "
                 f"core {args.gen_core}; {args.users} users, {args.convs} convs ({args.mix}); "
                 f"{m.get('cpu_model', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def machine_info(args: argparse.Namespace, exe: Path) -> dict:
    info: dict[str, Any] = {"hostname": socket.gethostname(), "kernel": platform.release(),
                            "nproc": os.cpu_count(), "python": sys.version.split()[0],
                            "loadgen": str(exe), "server_core": args.server_core,
                            "generator_core": args.gen_core}
    for line in (read_proc("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
            break
    for line in (read_proc("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    info["chatcluster_venv"] = run_helper(args.cc_python, ["versions"], 60)
    with contextlib.suppress(Exception):
        git = ["git", "-C", str(REPO_DIR)]
        info["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True,
                                            text=True, timeout=10, check=False).stdout.strip()
        info["git_dirty_files"] = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
            text=True, timeout=10, check=False).stdout.count("\n")
    with contextlib.suppress(Exception):
        info["redis_server"] = subprocess.run(["redis-server", "--version"], capture_output=True,
                                              text=True, timeout=10, check=False).stdout.strip()
    with contextlib.suppress(Exception):
        info["py_spy"] = subprocess.run([args.pyspy, "--version"], capture_output=True,
                                        text=True, timeout=10, check=False).stdout.strip()
    return info


# --------------------------------------------------------------------------------------------
# helpers run on the chatcluster virtualenv's Python (pymongo, aiokafka, redis)


def helper(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "versions":
        import importlib.metadata as md

        out = {"python": sys.version.split()[0]}
        for p in ("pymongo", "aiokafka", "redis", "websockets", "msgspec", "uvloop"):
            with contextlib.suppress(Exception):
                out[p] = md.version(p)
        print(json.dumps(out))
        return 0
    if cmd == "mongo-poll":
        import pymongo

        url = argv[1]
        max_s = float(argv[argv.index("--max-seconds") + 1]) if "--max-seconds" in argv else 600
        client: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=3000,
                                          socketTimeoutMS=5000)
        rcli: Any = None
        if "--redis" in argv:
            import redis

            rcli = redis.Redis.from_url(argv[argv.index("--redis") + 1], socket_timeout=5)
        end = time.time() + max_s
        while time.time() < end:
            t = time.time()
            try:
                st = client.admin.command("serverStatus")
                cmds = {k: int(v.get("total", 0))
                        for k, v in (st.get("metrics", {}).get("commands", {})).items()
                        if isinstance(v, dict) and "total" in v}
                rec = {"t": (t + time.time()) / 2, "ok": True, "commands": cmds,
                       "source": "serverStatus.metrics.commands"
                                 + (" (FerretDB)" if "ferretdbVersion" in st else "")}
                if "opcounters" in st:
                    rec["opcounters"] = {k: int(v) for k, v in st["opcounters"].items()}
                if rcli is not None:
                    rec["redis"] = {k.removeprefix("cmdstat_"): int(v["calls"])
                                    for k, v in rcli.info("commandstats").items()
                                    if isinstance(v, dict) and "calls" in v}
            except Exception as e:
                rec = {"t": t, "ok": False, "error": repr(e)[:200]}
            print(json.dumps(rec), flush=True)
            time.sleep(max(0.0, 0.5 - (time.time() - t)))
        return 0
    if cmd == "cleanup":
        import asyncio

        ns, store_url, bus_url, cache_url = argv[1:5]
        if not re.fullmatch(r"bench[0-9a-f]{8}", ns):
            print(json.dumps({"error": f"refusing to clean up namespace {ns!r}"}))
            return 1
        out: dict[str, Any] = {}

        async def clean() -> None:
            from aiokafka.admin import AIOKafkaAdminClient
            from pymongo import AsyncMongoClient
            from redis.asyncio import Redis

            try:
                servers = bus_url.split("://", 1)[1].split("/", 1)[0].split("?")[0].split(",")
                admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10_000)
                await admin.start()
                try:
                    mine = [t for t in await admin.list_topics() if t.startswith(f"{ns}.")]
                    if mine:
                        await admin.delete_topics(mine)
                    out["kafka_topics_deleted"] = len(mine)
                finally:
                    await admin.close()
            except Exception as e:
                out["kafka_error"] = repr(e)[:200]
            try:
                mongo: Any = AsyncMongoClient(store_url, serverSelectionTimeoutMS=5000)
                try:
                    db = mongo.get_default_database().name
                    if db != f"chat_{ns}":
                        raise RuntimeError(f"unexpected database {db}")
                    await mongo.drop_database(db)
                    out["mongo_database_dropped"] = db
                finally:
                    await mongo.close()
            except Exception as e:
                out["mongo_error"] = repr(e)[:200]
            try:
                redis = Redis.from_url(cache_url)
                try:
                    keys = [k async for k in redis.scan_iter(match=f"chat:{ns}:*", count=1000)]
                    for i in range(0, len(keys), 1000):
                        await redis.delete(*keys[i:i + 1000])
                    out["redis_keys_deleted"] = len(keys)
                finally:
                    await redis.aclose()
            except Exception as e:
                out["redis_error"] = repr(e)[:200]

        asyncio.run(asyncio.wait_for(clean(), 100))
        print(json.dumps(out))
        return 0
    print(json.dumps({"error": f"unknown helper {cmd}"}))
    return 2


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="backends.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("runs")
    g.add_argument("--only", choices=("embedded", "production"), help="one system only")
    g.add_argument("--runs", default="saturation,rate500,rate1000,profile",
                   help="which of saturation,rate500,rate1000,profile (default: all)")
    g.add_argument("--sat-duration", type=float, default=10,
                   help="(a) saturation window, s (default %(default)s)")
    g.add_argument("--duration", type=float, default=10,
                   help="(b), (c) fixed-rate windows, s (default %(default)s)")
    g.add_argument("--low-rate", type=float, default=500, help="(b), (d) rate (default 500)")
    g.add_argument("--high-rate", type=float, default=1000, help="(c) rate (default 1000)")
    g.add_argument("--warmup", type=float, default=2, help="unmeasured sending first, s (2)")
    g.add_argument("--drain", type=float, default=5,
                   help="generator's wait for late answers/deliveries, s (default 5)")
    g.add_argument("--users", type=int, default=200)
    g.add_argument("--convs", type=int, default=100)
    g.add_argument("--mix", default="g5", help="conversation mix (default g5: 4 recipients)")
    g.add_argument("--inflight", type=int, default=4,
                   help="saturation: unanswered sends per connection (default 4)")
    g.add_argument("--rate-inflight", type=int, default=40,
                   help="fixed rate: cap on unanswered sends per connection (default 40)")
    g.add_argument("--cooldown", type=float, default=2, help="pause between runs, s (2)")
    g.add_argument("--lag-timeout", type=float, default=90,
                   help="longest wait for the persist lag to reach 0 after a run, s (90)")
    g.add_argument("--lag-confirm", type=float, default=1.0,
                   help="lag must stay 0 this long to count as drained, s (1)")
    g.add_argument("--at-rest", type=float, default=3,
                   help="CPU of the started, unloaded cluster is measured this long, s (3)")
    g.add_argument("--prime", type=float, default=0,
                   help="unmeasured run at 200 msgs/s after each start-up, s (default 0: none; "
                        "every run has its own --warmup)")
    g.add_argument("--background-s", type=float, default=3,
                   help="(c) idle time before the run to measure other clients' store "
                        "commands, s (3)")
    g = ap.add_argument_group("profile")
    g.add_argument("--profile-seconds", type=int, default=8, help="py-spy -d (default 8)")
    g.add_argument("--profile-rate", type=int, default=200, help="py-spy -r, Hz (default 200)")
    g.add_argument("--profile-low-rate", default="auto",
                   help="(d2) a second profile at this rate (msgs/s), where the servers' core "
                        "has headroom, so that py-spy's samples are CPU time; 'auto': 10%% of "
                        "the system's saturation rate, 10..100 (default); 0: none")
    g.add_argument("--py-spy", dest="pyspy", default=None,
                   help="py-spy binary (default /tmp/bench-venv/bin/py-spy; pip-installed "
                        "there if missing)")
    g = ap.add_argument_group("environment")
    g.add_argument("--chatcluster", default=None,
                   help="the chatcluster command (default .venv/bin/chatcluster, else PATH)")
    g.add_argument("--loadgen", default=None,
                   help="generator binary (default: newest ~/.cache/chatcluster/bench/loadgen-*)")
    g.add_argument("--server-core", type=int, default=0)
    g.add_argument("--gen-core", type=int, default=1)
    g.add_argument("--startup-timeout", type=float, default=120)
    g.add_argument("--setup-timeout", type=float, default=60,
                   help="bound on each generator run's sign-in/connect/create phase, s")
    g.add_argument("--services-timeout", type=float, default=900,
                   help="bound on scripts/services up (installs on first use), s")
    g.add_argument("--wait-quiet", type=float, default=600,
                   help="before each system, wait up to this long for every core to be under "
                        "--quiet-pct busy (default %(default)s)")
    g.add_argument("--quiet-pct", type=float, default=20.0)
    g.add_argument("--retry-noisy", type=int, default=1,
                   help="run a load run again (up to N times) when other processes took more "
                        "than 10%% of the servers' core (default %(default)s)")
    g.add_argument("--max-seconds", type=float, default=1500,
                   help="bound on the whole invocation, not counting the waits for a quiet "
                        "machine; then it stops itself (default %(default)s)")
    g.add_argument("--out-dir", default=str(BENCH_DIR / "results"))
    g.add_argument("--keep-state", action="store_true", help="keep state dirs and logs")
    args = ap.parse_args(argv)
    args.runs = [x.strip() for x in args.runs.split(",") if x.strip()]
    bad = set(args.runs) - {"saturation", "rate500", "rate1000", "profile"}
    if bad:
        ap.error(f"unknown runs: {bad}")
    if args.chatcluster:
        args.chatcluster = args.chatcluster.split()
    else:
        venv = REPO_DIR / ".venv" / "bin" / "chatcluster"
        args.chatcluster = [str(venv)] if venv.exists() else [shutil.which("chatcluster") or
                                                              "chatcluster"]
    cc_py = Path(args.chatcluster[0]).parent / "python"
    args.cc_python = str(cc_py) if cc_py.exists() else sys.executable
    if len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"):
        ap.error("needs 2 usable cores and taskset")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="chatcluster-backends-"))
    with contextlib.suppress(OSError):  # the harness itself stays off the servers' core
        os.sched_setaffinity(0, {args.gen_core})
    with contextlib.suppress(Exception):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # bounded: the watchdog ends the run (SIGTERM to ourselves: every finally still runs);
    # time spent waiting for a quiet machine does not count
    waited = [0.0]
    deadline_hit = threading.Event()

    def watchdog() -> None:
        while True:
            time.sleep(1)
            if time.monotonic() - _t0 - waited[0] > args.max_seconds:
                log(f"WATCHDOG: over --max-seconds {args.max_seconds:g}: stopping")
                deadline_hit.set()
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(90)
                log("WATCHDOG: still running 90 s later: restoring affinity and exiting")
                AFFINITY.restore_all()
                os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()

    exe = Path(args.loadgen) if args.loadgen else newest_loadgen()
    if not exe or not exe.exists():
        log("no load generator: build one with bench/run.py or `go build` in bench/loadgen")
        return 2
    args.pyspy = find_pyspy(args.pyspy) if "profile" in args.runs else args.pyspy
    args.source_roots = json.loads(subprocess.run(
        [args.cc_python, "-c", "import sys, json; print(json.dumps(sys.path))"],
        capture_output=True, text=True, timeout=60, check=False).stdout or "[]")
    args.source_roots.append(str(REPO_DIR / "services"))
    results: dict[str, Any] = {"timestamp": stamp, "machine": machine_info(args, exe),
                               "params": {k: v for k, v in vars(args).items()
                                          if k not in ("source_roots",)}}
    log(f"load generator {exe}; py-spy {args.pyspy}; chatcluster {' '.join(args.chatcluster)}")
    rc = 0
    try:
        for name in ("embedded", "production"):
            if args.only and args.only != name:
                continue
            t = time.monotonic()
            results.setdefault("quiet_before", {})[name] = wait_quiet(
                name, args.wait_quiet, args.quiet_pct, set())
            waited[0] += time.monotonic() - t
            system = System(name, args, exe, work)
            results[name] = system.result
            try:
                system.run_all()
            except Exception as e:
                log(f"{name}: FAILED: {e}")
                system.result["error"] = str(e)
                rc = 1
            finally:
                system.stop()  # no-op unless interrupted mid-run
    except SystemExit:
        rc = 143 if not deadline_hit.is_set() else 3
        log("stopped early" + (" by the watchdog" if deadline_hit.is_set() else ""))
    finally:
        AFFINITY.restore_all()
        results["summary"] = summarize(results, args)
        if deadline_hit.is_set():
            results["stopped_by_watchdog"] = True
        path = out_dir / f"backends-{stamp}.json"
        path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        log(f"wrote {path}")
        pdir = work / "profiles"
        if pdir.exists():
            dest = out_dir / f"backends-{stamp}-profiles"
            dest.mkdir(exist_ok=True)
            for f in pdir.glob("*.txt"):
                with open(f, "rb") as src, gzip.open(dest / (f.name + ".gz"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
            log(f"raw py-spy stacks in {dest}")
        try:
            plot(results, out_dir / f"backends-{stamp}.png", args)
            log(f"wrote {out_dir / f'backends-{stamp}.png'}")
        except Exception as e:
            log(f"plot failed: {e!r}")
        if args.keep_state:
            log(f"state and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        print(path)
        s = results["summary"]
        for name in ("embedded", "production"):
            if name in s:
                sat = s[name]["saturation"]
                log(f"summary {name}: saturation {sat['accepted_per_s']} msgs/s accepted, "
                    f"{sat['delivered_per_s']} ev/s delivered, lag drained "
                    f"{sat['lag_drain_s_from_send_stop']} s after; p99 at "
                    f"{args.low_rate:g}/s {s[name][f'rate_{args.low_rate:g}']['deliver_ms']['p99']}"
                    " ms")
        log(f"production/embedded: {s.get('ratio_production_over_embedded')}")
    return rc


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_helper":
        sys.exit(helper(sys.argv[2:]))
    sys.exit(main())
