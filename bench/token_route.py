#!/usr/bin/env python3
"""The gateway's SDK token route next to a bare FastAPI route, in one invocation.

Both servers run pinned to core 0; the HTTP load generator (``hey``, built once with Go into
``~/.cache/chatcluster/bench/``) runs on core 1. For each system: a saturation run (``-c``
concurrent requests for ``--duration`` s), then a run at half of the *token route's*
saturation rate (the issue's "half load", from ``--half-concurrency`` workers paced by hey's
``-q``), each after a short warm-up. Latencies come from
hey's per-request CSV; requests per second count only 2xx answers.

- ``token``: ``POST /api/v1/auth/sdk/token`` of ``chatcluster up`` (embedded backends and a
  fresh state directory by default; ``--backends production``: Redis, Kafka and FerretDB from
  ``scripts/services``, pinned to the server core with the cluster). The bench app's quotas
  are raised first (admin settings route) so the load measures the route, not the rate
  limiter's refusals; the same user signs in every time, so a session and a user row are
  written per request as in production.
- ``baseline``: ``bench/baseline_fastapi.py``, the same body model and a constant answer.

Targets (issue 5): token requests/s >= 0.3 x baseline; token p99 <= 20 ms at half load.
Output: ``bench/results/token[-production]-<UTC>.json`` and ``.png``; progress on stderr.
Loopback only.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from procs import Affinity, Server, loopback, service_pids, services_up

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HEY_VERSION = "v0.1.4"
_t0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[token {time.monotonic() - _t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def build_hey() -> Path:
    out = Path.home() / ".cache" / "chatcluster" / "bench" / f"hey-{HEY_VERSION}"
    exe = out / "hey"
    if not exe.exists():
        log(f"building hey {HEY_VERSION} (go install, once)")
        subprocess.run(["go", "install", f"github.com/rakyll/hey@{HEY_VERSION}"],
                       env={**os.environ, "GOBIN": str(out)}, check=True, timeout=600)
    return exe


def post(url: str, body: dict[str, Any], token: str | None = None, method: str = "POST"
         ) -> dict[str, Any]:
    if not loopback(url):
        raise RuntimeError(f"refusing a non-loopback URL: {url}")
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                 method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read() or b"{}"))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def run_hey(hey: Path, core: int, url: str, body: str, seconds: float, concurrency: int,
            rate: float | None) -> dict[str, Any]:
    argv = ["taskset", "-c", str(core), str(hey), "-z", f"{seconds}s", "-c", str(concurrency),
            "-m", "POST", "-T", "application/json", "-d", body, "-o", "csv",
            # hey's keep-alive POSTs stall ~40 ms each against uvicorn (delayed ACK: one
            # request at -c 1 measured 48.8 ms with keep-alive, 1.8 ms without), for both
            # systems alike; a connection per request measures the servers instead.
            "-disable-keepalive"]
    if rate:
        argv += ["-q", f"{max(rate / concurrency, 0.01):.3f}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True,
                          timeout=seconds + 60, check=False)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    ok = [float(r["response-time"]) * 1000 for r in rows if r.get("status-code", "")[:1] == "2"]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r.get("status-code", "?")] = statuses.get(r.get("status-code", "?"), 0) + 1
    return {"offered_rate": rate, "concurrency": concurrency, "seconds": seconds,
            "requests": len(rows), "ok_per_s": round(len(ok) / seconds, 1),
            "statuses": statuses,
            "latency_ms": {"p50": percentile(ok, 0.50), "p99": percentile(ok, 0.99),
                           "max": round(max(ok), 3) if ok else None,
                           "mean": round(statistics.fmean(ok), 3) if ok else None}}


def pin(pids: list[int], core: int) -> None:
    for pid in pids:
        subprocess.run(["taskset", "-a", "-cp", str(core), str(pid)], capture_output=True,
                       check=False)


def measure(name: str, hey: Path, url: str, body: str, args: argparse.Namespace,
            half_of: float | None) -> dict[str, Any]:
    log(f"{name}: warm-up {args.warmup}s")
    run_hey(hey, args.gen_core, url, body, args.warmup, args.concurrency, None)
    log(f"{name}: saturation {args.duration}s at -c {args.concurrency}")
    sat = run_hey(hey, args.gen_core, url, body, args.duration, args.concurrency, None)
    log(f"{name}: {sat['ok_per_s']} ok/s, p50/p99 {sat['latency_ms']['p50']}/"
        f"{sat['latency_ms']['p99']} ms, statuses {sat['statuses']}")
    half_rate = (half_of if half_of is not None else sat["ok_per_s"]) / 2
    half = run_hey(hey, args.gen_core, url, body, args.duration, args.half_concurrency,
                   half_rate)
    log(f"{name}: at {half_rate:.0f} req/s: {half['ok_per_s']} ok/s, p50/p99 "
        f"{half['latency_ms']['p50']}/{half['latency_ms']['p99']} ms")
    return {"saturation": sat, "half_load": half}


def plot(results: dict[str, Any], png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not importable: no plot (run with /tmp/bench-venv/bin/python)")
        return
    names = ["token", "baseline"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    sat = [results[n]["saturation"]["ok_per_s"] for n in names]
    ax1.bar(["token route", "bare FastAPI"], sat, color=["tab:blue", "tab:orange"])
    for i, v in enumerate(sat):
        ax1.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ax1.set_ylabel("2xx requests/s at saturation (one core)")
    ax1.set_title(f"ratio {results['summary']['ratio_rps']} (target >= 0.3)")
    width = 0.35
    for j, n in enumerate(names):
        half = results[n]["half_load"]["latency_ms"]
        vals = [half["p50"] or 0, half["p99"] or 0]
        ax2.bar([k + j * width for k in range(2)], vals, width,
                label=f"{'token route' if n == 'token' else 'bare FastAPI'} @ "
                      f"{results[n]['half_load']['offered_rate']:.0f}/s")
    ax2.axhline(20, ls="--", color="gray", lw=1, label="20 ms target (token p99)")
    ax2.set_xticks([k + width / 2 for k in range(2)], ["p50", "p99"])
    ax2.set_ylabel("ms")
    ax2.set_title("latency at half of the token route's saturation rate")
    ax2.legend(fontsize=8)
    fig.suptitle(f"token route ({results['params']['backends']} backends) vs bare FastAPI, "
                 f"{results['timestamp']}; servers on core "
                 f"{results['params']['server_core']}, hey on core {results['params']['gen_core']}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--duration", type=float, default=10, help="s per measured run (10)")
    p.add_argument("--warmup", type=float, default=3, help="s of unmeasured load first (3)")
    p.add_argument("--concurrency", type=int, default=32, help="hey -c (32)")
    p.add_argument("--half-concurrency", type=int, default=4,
                   help="hey -c of the half-load runs (4): hey paces each worker with its own "
                        "ticker, so N workers send in bursts of up to N requests; few workers "
                        "keep the bursts small")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--gen-core", type=int, default=1)
    p.add_argument("--chatcluster", default=str(REPO_DIR / ".venv" / "bin" / "chatcluster"),
                   help="the chatcluster command (default: .venv/bin/chatcluster)")
    p.add_argument("--out-dir", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--backends", choices=("embedded", "production"), default="embedded",
                   help="the token route's backends (embedded): production starts Redis, "
                        "Kafka and FerretDB with scripts/services, pins them to the server "
                        "core too, and gives the run its own namespace")
    p.add_argument("--services-timeout", type=float, default=900,
                   help="s for scripts/services up (900: a cold run builds the servers)")
    args = p.parse_args(argv)
    hey = build_hey()
    python = str(Path(args.chatcluster).with_name("python"))
    work = Path(tempfile.mkdtemp(prefix="chatcluster-token-"))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {"timestamp": stamp, "params": vars(args) | {
        "out_dir": str(args.out_dir), "hey": HEY_VERSION}}
    env = {**os.environ, "CHAT_STORE_URL": "", "CHAT_BUS_URL": "", "CHAT_CACHE_URL": "",
           "CHAT_NAMESPACE": ""}
    affinity = Affinity(log)
    if args.backends == "production":
        svc, _ = services_up(args.services_timeout, log)
        namespace = f"tokbench{secrets.token_hex(4)}"
        # A database of its own (dropped at the end): the sessions of earlier runs would
        # otherwise weigh on every query FerretDB answers by scanning.
        store_url = svc["CHAT_STORE_URL"].rsplit("/", 1)[0] + "/" + namespace
        env.update({k: svc[k] for k in ("CHAT_BUS_URL", "CHAT_CACHE_URL")},
                   CHAT_STORE_URL=store_url, CHAT_NAMESPACE=namespace)
        for pid in service_pids(svc["CHAT_SERVICES_DIR"]).values():
            affinity.pin(pid, args.server_core, restore=True)
    up = Server("chatcluster", ["taskset", "-c", str(args.server_core), args.chatcluster, "up",
                                "--json", "--state-dir", str(work / "state")],
                work / "up.log", env, log)
    try:
        ready = up.wait_ready(90)
        gw = ready["gateway_url"]
        if not loopback(gw):
            raise RuntimeError(f"refusing a non-loopback gateway {gw}")
        pin([int(x) for x in os.listdir("/proc") if x.isdigit()
             and _child_of(int(x), up.proc.pid)], args.server_core)
        created = post(f"{gw}/api/v1/admin/apps", {"name": "bench"}, ready["admin_token"])
        post(f"{gw}/api/v1/admin/apps/{created['app_id']}/settings",
             {"token_requests_per_minute": 1_000_000,
              "token_requests_per_minute_per_user": 100_000},
             ready["admin_token"], method="PUT")
        body = json.dumps({"app_id": created["app_id"], "app_secret": created["app_secret"],
                           "user_external_id": "bench-user"})
        results["token"] = measure("token", hey, f"{gw}/api/v1/auth/sdk/token", body, args,
                                   None)
    finally:
        up.stop()
    base = Server("baseline", ["taskset", "-c", str(args.server_core), python,
                               str(BENCH_DIR / "baseline_fastapi.py")], work / "base.log", env,
                  log)
    try:
        url = base.wait_ready(60)["url"]
        body = json.dumps({"app_id": "a", "app_secret": "s", "user_external_id": "bench-user"})
        results["baseline"] = measure("baseline", hey, f"{url}/const", body, args,
                                      results["token"]["saturation"]["ok_per_s"])
    finally:
        base.stop()
        affinity.restore_all()
        if args.backends == "production":
            subprocess.run([python, "-c", "import pymongo, sys; "
                            "pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])",
                            env["CHAT_STORE_URL"], env["CHAT_NAMESPACE"]], timeout=60,
                           check=False)
    tok, bas = results["token"], results["baseline"]
    ratio = round(tok["saturation"]["ok_per_s"] / max(bas["saturation"]["ok_per_s"], 1e-9), 3)
    p99 = tok["half_load"]["latency_ms"]["p99"]
    results["summary"] = {"ratio_rps": ratio, "ratio_target_0_3_met": ratio >= 0.3,
                          "token_p99_half_load_ms": p99,
                          "p99_target_20ms_met": p99 is not None and p99 <= 20}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = "token" if args.backends == "embedded" else "token-production"
    path = args.out_dir / f"{name}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    plot(results, args.out_dir / f"{name}-{stamp}.png")
    shutil.rmtree(work, ignore_errors=True)
    log(f"summary: {results['summary']}")
    print(path)
    return 0


def _child_of(pid: int, root: int) -> bool:
    """``pid`` is ``root`` or below it."""
    while pid > 1:
        if pid == root:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


if __name__ == "__main__":
    sys.exit(main())
