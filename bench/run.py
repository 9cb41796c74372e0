#!/usr/bin/env python3
"""chatcluster benchmark harness.

Runs, in one invocation, against the system under test (``chatcluster up``)
and then against the baseline relay (``bench/baseline_relay.py``):

  (a) a saturation run: the generator sends as fast as the server accepts
      (closed loop, a bounded number of requests in flight per connection);
  (b) fixed-rate runs at several offered loads, for send->deliver latency
      percentiles against load;
  (c) an idle-connection run: N idle connections to ONE socket replica, and
      that replica's RSS before and after (RSS per idle connection).

The servers are pinned to one core (default 0) and the Go load generator
(bench/loadgen, built on demand into $HOME/.cache/chatcluster/bench) to the
other (default 1). CPU% and RSS of every server process are sampled from /proc
during each run. All traffic stays on 127.0.0.1; every step has a time bound.

Output: bench/results/<timestamp>.json (all figures, machine info, parameters,
ours/baseline ratios) and <timestamp>.png next to it (latency against offered
load, throughput). Progress goes to stderr; the path of the JSON file is
printed on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from procs import (
    Server,
    cpu_busy_pct,
    cpu_times,
    descendants,
    fd_count,
    listening_ports,
    loopback,
    proc_cmd,
    proc_rss_kib,
    proc_stat,
    read_proc,
    url_port,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

_t_start = time.monotonic()
NOISY_PCT = 10.0  # other processes' share of the servers' core that makes a run "noisy"
QUIET_PCT = 10.0  # busy% under which a core counts as quiet


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - _t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# child processes


def raise_nofile() -> None:
    """Allow many file descriptors; children (servers, generator) inherit it."""
    with contextlib.suppress(Exception):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


SETPRIV = shutil.which("setpriv")


def pinned(core: int | None, argv: list[str]) -> list[str]:
    """argv pinned to a core, and made to die with the harness (PR_SET_PDEATHSIG)."""
    if core is not None:
        argv = ["taskset", "-c", str(core), *argv]
    if SETPRIV:
        argv = [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    return argv


# --------------------------------------------------------------------------
# /proc


class Sampler:
    """Samples CPU% and RSS of a process tree every `interval` seconds."""

    def __init__(self, root: int, roles: dict[int, str], interval: float = 0.5):
        self.root, self.roles, self.interval = root, roles, interval
        self.samples: dict[int, list[tuple[float, int, int]]] = {}  # pid -> (unix t, ticks, rss)
        self.cmds: dict[int, str] = {}
        self.cpu: list[tuple[float, dict]] = []  # (unix t, cpu_times())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        t = time.time()
        self.cpu.append((t, cpu_times()))
        for pid in descendants(self.root):
            st, rss = proc_stat(pid), proc_rss_kib(pid)
            if st is None or rss is None:
                continue
            if pid not in self.cmds:
                self.cmds[pid] = proc_cmd(pid)
            self.samples.setdefault(pid, []).append((t, st[2], rss))

    def summary(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        """CPU% and RSS per process over the whole run, and CPU% over `window`
        (unix times: the generator's measurement window) when given."""
        procs = []
        total_cpu = total_wcpu = 0.0
        total_rss = 0
        for pid, ss in sorted(self.samples.items()):
            cmd = self.cmds.get(pid, "")
            if cmd.startswith(("taskset ", "/usr/bin/setpriv ")):
                continue
            cpu = _cpu_pct(ss[0], ss[-1])
            rss = [s[2] for s in ss]
            total_cpu += cpu
            total_rss += rss[-1]
            p: dict[str, Any] = {
                "pid": pid,
                "role": self.roles.get(pid, ""),
                "cmd": cmd[:160],
                "cpu_pct": round(cpu, 1),
                "rss_mib_mean": round(sum(rss) / len(rss) / 1024, 1),
                "rss_mib_max": round(max(rss) / 1024, 1),
                "rss_mib_last": round(rss[-1] / 1024, 1),
                "samples": len(ss),
            }
            if window:
                inside = [s for s in ss if window[0] <= s[0] <= window[1]]
                if len(inside) >= 2:
                    p["cpu_pct_window"] = round(_cpu_pct(inside[0], inside[-1]), 1)
                    total_wcpu += p["cpu_pct_window"]
            procs.append(p)
        out: dict[str, Any] = {
            "total_cpu_pct": round(total_cpu, 1),
            "total_rss_mib_last": round(total_rss / 1024, 1),
            "processes": procs,
        }
        if len(self.cpu) >= 2:
            out["cores"] = cpu_busy_pct(self.cpu[0][1], self.cpu[-1][1])
        if window:
            out["total_cpu_pct_window"] = round(total_wcpu, 1)
            inside = [c for c in self.cpu if window[0] <= c[0] <= window[1]]
            if len(inside) >= 2:
                out["cores_window"] = cpu_busy_pct(inside[0][1], inside[-1][1])
        return out


def _cpu_pct(a: tuple[float, int, int], b: tuple[float, int, int]) -> float:
    return 100.0 * (b[1] - a[1]) / CLK_TCK / (b[0] - a[0]) if b[0] > a[0] else 0.0


# --------------------------------------------------------------------------
# the load generator


def build_loadgen(go: str) -> Path:
    h = hashlib.sha256()
    for p in sorted(LOADGEN_DIR.iterdir()):
        if p.suffix == ".go" or p.name in ("go.mod", "go.sum"):
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    cache = Path(os.environ.get("HOME", "/tmp")) / ".cache" / "chatcluster" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    exe = cache / f"loadgen-{h.hexdigest()[:16]}"
    if exe.exists():
        log(f"load generator: cached {exe}")
        return exe
    log(f"building the load generator into {exe}")
    tmp = exe.with_suffix(".tmp")
    env = dict(os.environ, CGO_ENABLED="0")
    r = subprocess.run(
        [go, "build", "-trimpath", "-o", str(tmp), "."],
        cwd=LOADGEN_DIR,
        env=env,
        timeout=600,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"go build failed:\n{r.stdout}{r.stderr}")
    tmp.rename(exe)
    return exe


class LoadgenError(RuntimeError):
    pass


def loadgen_args(args: argparse.Namespace) -> list[str]:
    return [
        f"-users={args.users}",
        f"-convs={args.convs}",
        f"-mix={args.mix}",
        f"-text-size={args.text_size}",
        f"-pacing={args.pacing}",
        f"-warmup={args.warmup}",
        f"-duration={args.duration}",
        f"-drain={args.drain}",
        f"-setup-timeout={args.setup_timeout}",
    ]


def run_loadgen(exe: Path, core: int | None, argv: list[str], env: dict, timeout: float) -> dict:
    cmd = pinned(core, [str(exe), *argv])
    try:
        r = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LoadgenError(f"load generator did not finish in {timeout:.0f}s") from e
    out = r.stdout.decode(errors="replace").strip().splitlines()
    try:
        res = json.loads(out[-1])
    except (IndexError, ValueError) as e:
        raise LoadgenError(f"load generator exited {r.returncode} without a JSON result") from e
    if r.returncode != 0:
        res.setdefault("error", f"exit code {r.returncode}")
    return res


# --------------------------------------------------------------------------
# one target (ours or the baseline)


class Target:
    """What the runs need to know about a started system."""

    def __init__(self, name: str, server: Server, ready: dict, lg_target: list[str], env: dict):
        self.name = name
        self.server = server
        self.ready = ready
        self.lg_target = lg_target  # -target ... flags
        self.env = env  # environment for the generator (secrets are passed here, not in argv)
        self.roles: dict[int, str] = {}
        self.replica_pid: int | None = None

    def discover(self) -> list[dict]:
        pids = descendants(self.server.proc.pid)
        ports = listening_ports(pids)
        sock_ports = {url_port(u): u for u in self.ready.get("socket_urls", [])}
        gw_port = (
            url_port(self.ready.get("gateway_url", "")) if self.ready.get("gateway_url") else None
        )
        first_port = url_port(self.ready["socket_urls"][0])
        out = []
        for pid in pids:
            cmd = proc_cmd(pid)
            role = ""
            for p in ports.get(pid, []):
                if p in sock_ports:
                    role = f"socket {sock_ports[p]}"
                    if p == first_port and self.replica_pid is None:
                        self.replica_pid = pid
                elif p == gw_port:
                    role = "gateway"
            if cmd.startswith(("taskset ", "/usr/bin/setpriv ")):
                continue
            if not role:  # guess from the command line: "chatcluster up", "... consumers ..."
                words = cmd.split()
                for w in ("up", "consumers", "gateway", "socket"):
                    if w in words[1:4]:
                        role = w
                        break
            self.roles[pid] = role
            out.append(
                {"pid": pid, "role": role, "listens": sorted(ports.get(pid, [])), "cmd": cmd[:200]}
            )
        return out


def note_interference(srv: dict, args: argparse.Namespace) -> str:
    """Busy% of the servers' core not explained by the servers: other work on
    this machine that skews the figures. Returns a warning for the log."""
    cw = srv.get("cores_window") or {}
    core = str(args.server_core)
    if args.server_core is None or core not in cw or "total_cpu_pct_window" not in srv:
        return ""
    busy = cw[core]["busy_pct"]
    # interrupt time (the loopback network stack's softirqs, mostly) is not
    # charged to any process: leave it out of "other processes"
    other = round(max(0.0, busy - cw[core]["irq_pct"] - srv["total_cpu_pct_window"]), 1)
    srv["server_core_busy_pct_window"] = busy
    srv["other_load_on_server_core_pct"] = other
    if other > NOISY_PCT:
        return f" WARNING: {other}% of core {core} went to other processes"
    return ""


def machine_quiet(seconds: float = 2.0) -> dict:
    """How busy the machine is before a system starts (other users' load)."""
    a = cpu_times()
    time.sleep(seconds)
    return cpu_busy_pct(a, cpu_times())


def wait_quiet(name: str, seconds: float) -> dict:
    """Wait up to `seconds` for every core to be under QUIET_PCT busy."""
    quiet = machine_quiet()
    until = time.monotonic() + seconds
    while max(v["busy_pct"] for v in quiet.values()) > QUIET_PCT and time.monotonic() < until:
        log(f"{name}: waiting for a quiet machine (busy% {quiet['all']['busy_pct']})")
        time.sleep(5)
        quiet = machine_quiet()
    return quiet


def run_suite(t: Target, exe: Path, args: argparse.Namespace) -> dict:
    res: dict[str, Any] = {}
    res["processes"] = t.discover()
    time.sleep(1)
    with Sampler(t.server.proc.pid, t.roles, args.sample_interval) as smp:
        time.sleep(3)
    res["at_rest"] = smp.summary()
    log(
        f"{t.name}: at rest: CPU {res['at_rest']['total_cpu_pct']}%, "
        f"RSS {res['at_rest']['total_rss_mib_last']} MiB"
    )
    log(
        f"{t.name}: processes: "
        + ", ".join(f"{p['pid']}({p['role'] or '-'})" for p in res["processes"])
    )
    base = [*t.lg_target, *loadgen_args(args)]
    lg_timeout = args.setup_timeout + args.warmup + args.duration + args.drain + 90

    def one(label: str, extra: list[str]) -> dict:
        noisy: list[dict] = []
        while True:
            run = one_attempt(label, extra)
            other = run["server"].get("other_load_on_server_core_pct") or 0
            if other <= NOISY_PCT or len(noisy) >= args.retry_noisy:
                break
            noisy.append({"other_load_on_server_core_pct": other, "loadgen": run["loadgen"]})
            log(f"{t.name}: {label}: other load on the servers' core, running it again")
            wait_quiet(t.name, 60)
        if noisy:
            run["noisy_attempts"] = noisy
        return run

    def one_attempt(label: str, extra: list[str]) -> dict:
        if not t.server.alive():
            raise RuntimeError(f"{t.name} is no longer running; log tail:\n{t.server.log_tail()}")
        log(f"{t.name}: {label}")
        with Sampler(t.server.proc.pid, t.roles, args.sample_interval) as smp:
            try:
                lg = run_loadgen(exe, args.gen_core, [*base, *extra], t.env, lg_timeout)
            except LoadgenError as e:
                lg = {"error": str(e)}
        win = lg.get("window_unix")
        run = {"label": label, "loadgen": lg, "server": smp.summary(tuple(win) if win else None)}
        interference = note_interference(run["server"], args)
        lat = lg.get("latency_ms", {}).get("deliver", {})
        log(
            f"{t.name}: {label}: accepted {lg.get('accepted_per_s')} msgs/s, "
            f"delivered {lg.get('delivered_per_s')} ev/s (ratio {lg.get('delivery_ratio')}), "
            "deliver p50/p99 "
            f"{lat.get('p50')}/{lat.get('p99')} ms, errors {lg.get('errors')}, "
            f"server CPU {run['server'].get('total_cpu_pct_window')}% (in window), generator CPU "
            f"{(lg.get('generator') or {}).get('cpu_util')}"
            + (f" ERROR {lg['error']}" if "error" in lg else "")
            + interference
        )
        time.sleep(args.cooldown)
        return run

    if not args.skip_saturation:
        res["saturation"] = one("saturation", ["-rate=0", f"-inflight={args.inflight}"])
    if args.rates:
        res["fixed_rate"] = []
        for rate in args.rates:
            r = one(f"rate {rate:g} msgs/s", [f"-rate={rate}", f"-inflight={args.rate_inflight}"])
            r["offered_rate"] = rate
            res["fixed_rate"].append(r)
    if not args.skip_idle:
        res["idle"] = idle_run(t, exe, args)
    return res


def idle_run(t: Target, exe: Path, args: argparse.Namespace) -> dict:
    url = t.ready["socket_urls"][0]
    pid = t.replica_pid
    out: dict[str, Any] = {"url": url, "pid": pid, "conns": args.idle_conns}
    if pid is None:
        out["error"] = f"could not find the process listening on {url}"
        log(f"{t.name}: idle run skipped: {out['error']}")
        return out
    log(f"{t.name}: idle run: {args.idle_conns} connections to {url} (pid {pid})")

    def rss_median(n: int = 5) -> int:
        vals = []
        for _ in range(n):
            v = proc_rss_kib(pid)
            if v is not None:
                vals.append(v)
            time.sleep(0.5)
        if not vals:
            raise RuntimeError(f"replica {pid} is gone")
        return sorted(vals)[len(vals) // 2]

    time.sleep(args.idle_settle)
    before = rss_median()
    fds_before = fd_count(pid)
    with tempfile.TemporaryDirectory(prefix="chatcluster-bench-idle-") as td:
        ready_file = Path(td) / "ready.json"
        hold = args.idle_setup_timeout + args.idle_settle + 60
        argv = [
            str(exe),
            "-mode=idle",
            *t.lg_target,
            f"-idle-conns={args.idle_conns}",
            f"-idle-url={url}",
            f"-hold={hold}",
            f"-setup-timeout={args.idle_setup_timeout}",
            f"-ready-file={ready_file}",
        ]
        with Sampler(t.server.proc.pid, t.roles, args.sample_interval) as smp:
            gen = subprocess.Popen(
                pinned(args.gen_core, argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                env=t.env,
            )
            try:
                deadline = time.monotonic() + args.idle_setup_timeout + 30
                while not ready_file.exists():
                    if gen.poll() is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                if ready_file.exists():
                    out["generator_ready"] = json.loads(ready_file.read_text())
                    time.sleep(args.idle_settle)
                    after = rss_median()
                    out["fds_before"], out["fds_after"] = fds_before, fd_count(pid)
                else:
                    after = None
            finally:
                if gen.poll() is None:
                    gen.send_signal(signal.SIGTERM)
                try:
                    stdout, _ = gen.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    gen.kill()
                    stdout, _ = gen.communicate()
        out["server"] = smp.summary()
    lines = stdout.decode(errors="replace").strip().splitlines()
    with contextlib.suppress(IndexError, ValueError):
        out["loadgen"] = json.loads(lines[-1])
    out["rss_kib_before"] = before
    if after is None:
        out["error"] = "the generator did not report its connections open"
        log(f"{t.name}: idle run failed: {out.get('loadgen', {}).get('error', out['error'])}")
        return out
    connected = int(out["generator_ready"].get("connected") or 0)
    out["rss_kib_after"] = after
    out["connected"] = connected
    if connected:
        out["rss_kib_per_conn"] = round((after - before) / connected, 2)
    log(
        f"{t.name}: idle: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB for {connected} "
        f"connections = {out.get('rss_kib_per_conn')} KiB/connection"
    )
    return out


# --------------------------------------------------------------------------
# starting the two systems


def start_ours(args: argparse.Namespace, state_dir: Path, logs: Path) -> Target:
    cmd = args.chatcluster
    argv = pinned(args.server_core, [*cmd, "up", "--json", "--state-dir", str(state_dir)])
    srv = Server("chatcluster", argv, logs / "chatcluster-up.log", log=log)
    try:
        ready = srv.wait_ready(args.startup_timeout)
    except Exception:
        srv.stop()
        raise
    for u in [ready.get("gateway_url", ""), *ready.get("socket_urls", [])]:
        if not loopback(u):
            srv.stop()
            raise RuntimeError(f"refusing to benchmark a non-loopback URL: {u}")
    env = dict(os.environ, LOADGEN_APP_SECRET=str(ready["app_secret"]))
    lg = ["-target=chatcluster", f"-gateway={ready['gateway_url']}", f"-app-id={ready['app_id']}"]
    public = {k: ready.get(k) for k in ("gateway_url", "socket_urls", "app_id")}
    return Target("ours", srv, public, lg, env)


def start_baseline(args: argparse.Namespace, logs: Path, max_seconds: float) -> Target:
    argv = pinned(
        args.server_core,
        [
            args.baseline_python,
            str(BENCH_DIR / "baseline_relay.py"),
            "--host=127.0.0.1",
            "--port=0",
            f"--max-seconds={max_seconds:.0f}",
        ],
    )
    srv = Server("baseline relay", argv, logs / "baseline-relay.log", log=log)
    try:
        ready = srv.wait_ready(60)
    except Exception:
        srv.stop()
        raise
    lg = ["-target=relay", "-socket-urls=" + ",".join(ready["socket_urls"])]
    return Target("baseline", srv, ready, lg, dict(os.environ))


# --------------------------------------------------------------------------
# results


def machine_info(args: argparse.Namespace, exe: Path) -> dict:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "nproc": os.cpu_count(),
        "harness_affinity": sorted(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "loadgen": str(exe),
        "server_core": args.server_core,
        "generator_core": args.gen_core,
    }
    cpuinfo = read_proc("/proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
            break
    mem = read_proc("/proc/meminfo") or ""
    for line in mem.splitlines():
        if line.startswith("MemTotal:"):
            info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(Exception):
        info["go"] = subprocess.run(
            [args.go, "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    with contextlib.suppress(Exception):
        info["baseline_python"] = subprocess.run(
            [
                args.baseline_python,
                "-c",
                "import sys, websockets; print(sys.version.split()[0], websockets.__version__)",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    return info


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def summarize(results: dict) -> dict:
    s: dict[str, Any] = {}
    for name in ("ours", "baseline"):
        r = results.get(name)
        if not isinstance(r, dict):
            continue
        sat = _get(r, "saturation", "loadgen") or {}
        row: dict[str, Any] = {
            "saturation_accepted_per_s": sat.get("accepted_per_s"),
            "saturation_delivered_per_s": sat.get("delivered_per_s"),
            "saturation_deliver_ms": {
                k: _get(sat, "latency_ms", "deliver", k) for k in ("p50", "p95", "p99", "max")
            },
            "saturation_ack_ms": {k: _get(sat, "latency_ms", "ack", k) for k in ("p50", "p99")},
            "saturation_errors": sat.get("errors"),
            "saturation_delivery_ratio": sat.get("delivery_ratio"),
            "saturation_server_cpu_pct": _get(r, "saturation", "server", "total_cpu_pct_window"),
            "saturation_other_load_on_server_core_pct": _get(
                r, "saturation", "server", "other_load_on_server_core_pct"
            ),
            "idle_rss_kib_per_conn": _get(r, "idle", "rss_kib_per_conn"),
            "at_rest_cpu_pct": _get(r, "at_rest", "total_cpu_pct"),
            "at_rest_rss_mib": _get(r, "at_rest", "total_rss_mib_last"),
            "by_rate": [],
        }
        for fr in r.get("fixed_rate", []):
            lg = fr.get("loadgen", {})
            row["by_rate"].append(
                {
                    "offered": fr.get("offered_rate"),
                    "accepted_per_s": lg.get("accepted_per_s"),
                    "delivered_per_s": lg.get("delivered_per_s"),
                    "deliver_ms": {
                        k: _get(lg, "latency_ms", "deliver", k)
                        for k in ("p50", "p95", "p99", "max")
                    },
                    "ack_ms": {k: _get(lg, "latency_ms", "ack", k) for k in ("p50", "p99")},
                    "delivery_ratio": lg.get("delivery_ratio"),
                    "errors": lg.get("errors"),
                    "server_cpu_pct": _get(fr, "server", "total_cpu_pct_window"),
                    "other_load_on_server_core_pct": _get(
                        fr, "server", "other_load_on_server_core_pct"
                    ),
                }
            )
        s[name] = row
    o, b = s.get("ours", {}), s.get("baseline", {})
    for key in ("saturation_delivered_per_s", "saturation_accepted_per_s"):
        if o.get(key) and b.get(key):
            s["ratio_" + key.removeprefix("saturation_") + "_at_saturation"] = round(
                o[key] / b[key], 4
            )
    return s


def plot(results: dict, png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    summ = results["summary"]
    if not any(
        row.get("by_rate") or row.get("saturation_accepted_per_s")
        for row in (summ.get("ours", {}), summ.get("baseline", {}))
    ):
        log("nothing to plot")
        return
    colors = {"ours": "tab:blue", "baseline": "tab:orange"}
    labels = {"ours": "chatcluster", "baseline": "baseline relay"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.6))
    xs: set[float] = set()
    rates: set[float] = set()
    ymax = 0.0
    for name in ("ours", "baseline"):
        row = summ.get(name, {})
        rows = [r for r in row.get("by_rate", []) if r["deliver_ms"].get("p50") is not None]
        x = [r["offered"] for r in rows]
        xs.update(x)
        rates.update(x)
        ymax = max([ymax] + [r["deliver_ms"]["p99"] or 0 for r in rows])
        if rows:
            for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
                ax1.plot(
                    x,
                    [r["deliver_ms"][q] for r in rows],
                    style,
                    marker="o",
                    color=colors[name],
                    label=f"{labels[name]} {q}",
                )
            ax2.plot(
                x,
                [r["accepted_per_s"] for r in rows],
                "-",
                marker="o",
                color=colors[name],
                label=f"{labels[name]} accepted msgs/s",
            )
            ax2.plot(
                x,
                [r["delivered_per_s"] for r in rows],
                "--",
                marker="s",
                color=colors[name],
                label=f"{labels[name]} delivered events/s",
            )
        sat_acc, sat_del = (
            row.get("saturation_accepted_per_s"),
            row.get("saturation_delivered_per_s"),
        )
        if sat_acc:
            xs.add(sat_acc)
            lat = row.get("saturation_deliver_ms", {})
            if lat.get("p50") is not None:
                ymax = max(ymax, lat["p99"] or 0)
                ax1.plot(
                    [sat_acc, sat_acc, sat_acc],
                    [lat["p50"], lat["p95"], lat["p99"]],
                    linestyle="none",
                    marker="x",
                    markersize=9,
                    color=colors[name],
                    label=f"{labels[name]} saturation p50/p95/p99 (at accepted rate)",
                )
            ax2.axhline(sat_acc, color=colors[name], lw=0.9, alpha=0.6)
            ax2.annotate(
                f"{labels[name]} saturation: {sat_acc:.0f} msgs/s accepted",
                (0.01, sat_acc),
                xycoords=("axes fraction", "data"),
                fontsize=8,
                color=colors[name],
                va="bottom",
            )
        if sat_del:
            ax2.axhline(sat_del, color=colors[name], lw=0.9, ls="--", alpha=0.6)
            ax2.annotate(
                f"{labels[name]} saturation: {sat_del:.0f} events/s delivered",
                (0.01, sat_del),
                xycoords=("axes fraction", "data"),
                fontsize=8,
                color=colors[name],
                va="bottom",
            )
    if xs:
        lo, hi = min(xs), max(xs)
        ax2.plot([lo, hi], [lo, hi], color="gray", lw=0.8, alpha=0.5, label="offered")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (msgs/s)")
        ax.grid(True, which="both", alpha=0.3)
        if xs:
            # the offered rates, and the saturation rates where they do not crowd them
            ticks = sorted(rates)
            for x in sorted(xs - rates):
                if all(abs(x / t - 1) > 0.25 for t in ticks):
                    ticks.append(x)
            ax.set_xticks(sorted(ticks))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    if ymax > 0:
        ax1.set_ylim(top=ymax * 40)  # room for the legend above the curves
    ax1.set_ylabel("send -> deliver latency (ms)")
    ax1.set_title("send -> deliver latency against offered load")
    ax1.legend(fontsize=7, loc="upper left")
    ax2.set_ylabel("per second")
    ratio = summ.get("ratio_delivered_per_s_at_saturation")
    title = "throughput"
    if ratio:
        title += f" (ours/baseline delivered events/s at saturation: {ratio:.3f})"
    ax2.set_title(title, fontsize=10)
    ax2.legend(fontsize=7, loc="lower right")
    p = results["params"]
    fig.suptitle(
        f"chatcluster bench {results['timestamp']}: {p['users']} users, {p['convs']} conversations "
        f"({p['mix']}), {p['duration']:g}s windows, servers on core {p['server_core']}, "
        f"generator on core {p['gen_core']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------


def default_chatcluster() -> list[str]:
    found = shutil.which("chatcluster")
    if found:
        return [found]
    venv = REPO_DIR / ".venv" / "bin" / "chatcluster"
    return [str(venv)]


def default_baseline_python(chatcluster: list[str]) -> str:
    """The chatcluster venv's python (same websockets and msgspec), else ours."""
    cands = [str(Path(chatcluster[0]).parent / "python"), sys.executable]
    for py in cands:
        if not os.path.exists(py):
            continue
        with contextlib.suppress(Exception):
            r = subprocess.run(
                [py, "-c", "import websockets.asyncio.server"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if r.returncode == 0:
                return py
    return sys.executable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = ap.add_argument_group("load")
    g.add_argument(
        "--duration",
        type=float,
        default=10,
        help="measurement window per run, s (default %(default)s)",
    )
    g.add_argument(
        "--warmup",
        type=float,
        default=2,
        help="unmeasured sending before each window, s (default %(default)s)",
    )
    g.add_argument(
        "--drain",
        type=float,
        default=5,
        help="max wait for late answers/deliveries, s (default %(default)s)",
    )
    g.add_argument(
        "--rates",
        default="250,500,1000,2000",
        help="fixed offered rates, msgs/s, comma-separated; '' for none (default %(default)s)",
    )
    g.add_argument(
        "--users", type=int, default=200, help="users = connections (default %(default)s)"
    )
    g.add_argument("--convs", type=int, default=100, help="conversations (default %(default)s)")
    g.add_argument(
        "--mix", default="g5", help="conversation mix, see loadgen -h (default %(default)s)"
    )
    g.add_argument(
        "--inflight",
        type=int,
        default=4,
        help="saturation: requests in flight per connection, <= 40 (default %(default)s)",
    )
    g.add_argument(
        "--rate-inflight",
        type=int,
        default=40,
        help="fixed-rate runs: cap on unanswered requests per connection, <= 40; high, so that "
        "the offered rate stays open-loop when the server slows down (default %(default)s)",
    )
    g.add_argument(
        "--text-size", type=int, default=64, help="message text length (default %(default)s)"
    )
    g.add_argument(
        "--pacing",
        choices=("poisson", "even"),
        default="poisson",
        help="fixed-rate pacing (default %(default)s)",
    )
    g.add_argument(
        "--cooldown", type=float, default=3, help="pause between runs, s (default %(default)s)"
    )
    g.add_argument(
        "--setup-timeout",
        type=float,
        default=120,
        help="bound on a run's sign-in/connect/create phase, s (default %(default)s)",
    )
    g = ap.add_argument_group("idle connections")
    g.add_argument(
        "--idle-conns",
        type=int,
        default=5000,
        help="idle connections to one replica (default %(default)s)",
    )
    g.add_argument(
        "--idle-settle",
        type=float,
        default=3,
        help="wait before each RSS reading, s (default %(default)s)",
    )
    g.add_argument(
        "--idle-setup-timeout",
        type=float,
        default=300,
        help="bound on opening them, s (default %(default)s)",
    )
    g = ap.add_argument_group("what to run")
    g.add_argument("--only", choices=("ours", "baseline"), help="run one system only")
    g.add_argument("--skip-saturation", action="store_true")
    g.add_argument("--skip-idle", action="store_true")
    g.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        help="run a load run again, up to this many times, when other processes took more "
        "than 10%% of the servers' core during it (default %(default)s)",
    )
    g.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        help="before starting each system, wait up to this many seconds for every core "
        "to be under 10%% busy (default %(default)s)",
    )
    g = ap.add_argument_group("environment")
    g.add_argument(
        "--chatcluster",
        default=None,
        help="the chatcluster command (default: on PATH, else .venv/bin/chatcluster)",
    )
    g.add_argument(
        "--baseline-python",
        default=None,
        help="python for the relay, needs websockets>=14 (default: the chatcluster venv's)",
    )
    g.add_argument(
        "--go",
        default=shutil.which("go") or "/usr/local/go/bin/go",
        help="go toolchain (default %(default)s)",
    )
    g.add_argument(
        "--loadgen", default=None, help="use this generator binary instead of building one"
    )
    g.add_argument(
        "--server-core", type=int, default=0, help="core for the servers (default %(default)s)"
    )
    g.add_argument(
        "--gen-core", type=int, default=1, help="core for the generator (default %(default)s)"
    )
    g.add_argument("--no-pin", action="store_true", help="do not use taskset")
    g.add_argument(
        "--sample-interval",
        type=float,
        default=0.5,
        help="/proc sampling period, s (default %(default)s)",
    )
    g.add_argument(
        "--startup-timeout",
        type=float,
        default=180,
        help="bound on 'chatcluster up' getting ready, s (default %(default)s)",
    )
    g.add_argument(
        "--out-dir",
        default=str(BENCH_DIR / "results"),
        help="where results go (default %(default)s)",
    )
    g.add_argument(
        "--keep-state", action="store_true", help="keep the state directory and server logs"
    )
    args = ap.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    args.chatcluster = args.chatcluster.split() if args.chatcluster else default_chatcluster()
    if args.baseline_python is None:
        args.baseline_python = default_baseline_python(args.chatcluster)
    if not (1 <= args.inflight <= 40 and 1 <= args.rate_inflight <= 40):
        ap.error("--inflight and --rate-inflight must be in 1..40")
    ncpu = len(os.sched_getaffinity(0))
    if args.no_pin or ncpu < 2 or not shutil.which("taskset"):
        if not args.no_pin:
            log("fewer than 2 usable cores or no taskset: running unpinned")
        args.server_core = args.gen_core = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="chatcluster-bench-"))
    logs = work / "logs"
    logs.mkdir()
    # the harness itself stays off the servers' core
    if args.gen_core is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.gen_core})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_nofile()

    exe = Path(args.loadgen) if args.loadgen else build_loadgen(args.go)
    results: dict[str, Any] = {
        "timestamp": stamp,
        "machine": machine_info(args, exe),
        "params": {k: v for k, v in vars(args).items() if k not in ("out_dir",)},
    }
    n_runs = (0 if args.skip_saturation else 1) + len(args.rates)
    per_run = args.setup_timeout + args.warmup + args.duration + args.drain + args.cooldown + 90
    relay_bound = n_runs * per_run + args.idle_setup_timeout + 300
    rc = 0
    try:
        for name in ("ours", "baseline"):
            if args.only and args.only != name:
                continue
            tgt = None
            quiet = wait_quiet(name, args.wait_quiet)
            busy = {k: v["busy_pct"] for k, v in quiet.items()}
            log(f"{name}: machine before start, busy% per core: {busy}")
            if max(busy.values(), default=0) > 15:
                log("WARNING: the machine is busy with other work; figures will be skewed")
            try:
                if name == "ours":
                    tgt = start_ours(args, work / "state", logs)
                else:
                    tgt = start_baseline(args, logs, relay_bound)
                results[name] = {"ready": tgt.ready, "busy_before": quiet}
                results[name].update(run_suite(tgt, exe, args))
            except Exception as e:  # report what we have, go on with the other system
                log(f"{name}: FAILED: {e}")
                results.setdefault(name, {})
                if isinstance(results[name], dict):
                    results[name]["error"] = str(e)
                rc = 1
            finally:
                if tgt is not None:
                    tgt.server.stop()
                    entry = results.setdefault(name, {})
                    if isinstance(entry, dict):
                        entry["log_tail"] = tgt.server.log_tail(15)
    finally:
        results["summary"] = summarize(results)
        path = out_dir / f"{stamp}.json"
        path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        log(f"wrote {path}")
        try:
            png = out_dir / f"{stamp}.png"
            plot(results, png)
            if png.exists():
                log(f"wrote {png}")
        except Exception as e:
            log(f"plot failed: {e!r}")
        if args.keep_state:
            log(f"state and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        print(path)
        s = results["summary"]
        for name in ("ours", "baseline"):
            err = (results.get(name) or {}).get("error")
            if err:
                log(f"summary {name}: FAILED: {err.splitlines()[0]}")
            elif name in s:
                log(
                    f"summary {name}: saturation {s[name]['saturation_accepted_per_s']} msgs/s, "
                    f"{s[name]['saturation_delivered_per_s']} ev/s; idle "
                    f"{s[name]['idle_rss_kib_per_conn']} KiB/conn"
                )
        if "ratio_delivered_per_s_at_saturation" in s:
            ratio = s["ratio_delivered_per_s_at_saturation"]
            log(f"ours/baseline delivered events/s at saturation: {ratio}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
