#!/usr/bin/env python3
"""Operator benchmark: ``chatcluster operator`` against the real control plane of
``scripts/k8s-testenv up`` (kube-apiserver, controller manager, scheduler, kwok nodes).

  (a) latency, repeated: apply one ChatCluster (the example: dev backends, 2 socket
      replicas) -> every child created -> Ready=True; then scale to 3 -> three URLs in the
      <name>-socket-urls ConfigMap and in status.socketURLs;
  (b) load: 100 ChatClusters applied at once (backends by Secret reference, 1 gateway,
      1 socket replica, 1 consumer: 300 pods, within kwok's 500-pod node) -> all Ready=True,
      while the operator's CPU and RSS are sampled from /proc every 0.25 s.

Targets (issue 4): children within 2 s of apply; URLs within 5 s of a scale; 100 clusters
within 60 s with operator RSS <= 150 MB. Pods are kwok's (Ready at once), so the times are
the operator's and the control plane's, not an image pull's.

    eval "$(scripts/k8s-testenv up)"
    .venv/bin/python bench/operator_bench.py [--clusters 100] [--rounds 5]
    python-with-matplotlib bench/operator_bench.py --plot bench/results/operator-<ts>.json

Output: bench/results/operator-<timestamp>.json and .png (the plot needs matplotlib; if the
running Python has none, re-run with --plot under one that has). Only the API server on
loopback is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CRD = ROOT / "charts/chatcluster-operator/crds/chatclusters.chatcluster.dev.yaml"
EXAMPLE_CHILDREN = 22  # what tests/operator/e2e checks for the example
CHILD_KINDS = (("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
               ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("v1", "ConfigMap"),
               ("v1", "Secret"), ("apps/v1", "Deployment"), ("v1", "Service"),
               ("apps/v1", "StatefulSet"), ("policy/v1", "PodDisruptionBudget"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench-operator {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds used so far, RSS in MB) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if line.startswith("VmRSS:"))
    return cpu, rss_kb / 1024


def cc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "chatcluster.dev/v1alpha1", "kind": "ChatCluster",
            "metadata": {"name": name}, "spec": spec}


EXAMPLE_SPEC = {"image": "chatcluster:0.1.0", "gateway": {"replicas": 1},
                "sockets": {"replicas": 2}, "consumers": {"replicas": 1},
                "backends": {"dev": True}}
REF = {"secretRef": {"name": "backends"}}
LOAD_SPEC = {"gateway": {"replicas": 1}, "sockets": {"replicas": 1},
             "consumers": {"replicas": 1},
             "backends": {"mongodb": REF, "kafka": REF, "redis": REF}}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from chatcluster.adapters.kubernetes.api import Connection, KubeApi, resource_path

    api = KubeApi(Connection.from_env())
    kubectl = os.environ.get("KUBECTL", "kubectl")
    subprocess.run(  # noqa: ASYNC221
        [kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(CRD)],
        check=True, capture_output=True)
    # A previous run's namespace still being garbage-collected would load the control plane.
    for _ in range(600):
        spaces = (await api.request("GET", resource_path("v1", "Namespace")))["items"]
        if not any(n["metadata"]["name"].startswith("bench-op-") for n in spaces):
            break
        await asyncio.sleep(0.5)
    ns = f"bench-op-{uuid.uuid4().hex[:6]}"
    await api.create(resource_path("v1", "Namespace"),
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    cc_path = resource_path("chatcluster.dev/v1alpha1", "ChatCluster", ns)
    log_file = RESULTS / f"operator-{args.stamp}.log"
    op = subprocess.Popen(  # noqa: ASYNC220
        [str(Path(sys.executable).parent / "chatcluster"), "operator",
                           "-n", ns, "--lease-namespace", ns, "--identity", "bench",
                           "--workers", str(args.workers)],
                          stdout=log_file.open("w"), stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"namespace": ns, "operator_pid": op.pid}
    try:
        while "acquired leadership" not in log_file.read_text():
            assert op.poll() is None, log_file.read_text()
            await asyncio.sleep(0.05)
        _, rss0 = proc_sample(op.pid)
        result["idle_rss_mb"] = round(rss0, 1)

        async def count_children(name: str) -> int:
            sel = f"app.kubernetes.io/instance={name}"
            counts = await asyncio.gather(*(api.list(resource_path(v, k, ns), labels=sel)
                                            for v, k in CHILD_KINDS))
            return sum(len(c) for c in counts)

        async def ready(name: str) -> bool:
            obj = await api.get(f"{cc_path}/{name}")
            conds = ((obj or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        async def urls(name: str) -> int:
            cm = await api.get(resource_path("v1", "ConfigMap", ns, f"{name}-socket-urls"))
            obj = await api.get(f"{cc_path}/{name}")
            in_cm = json.loads(((cm or {}).get("data") or {}).get("socket_urls", "[]"))
            in_status = ((obj or {}).get("status") or {}).get("socketURLs") or []
            return len(in_cm) if in_cm == in_status else -1

        async def until(check: Any, timeout: float) -> float:
            start = time.monotonic()
            while time.monotonic() - start < timeout:
                if await check():
                    return time.monotonic()
                await asyncio.sleep(0.02)
            raise TimeoutError

        rounds = []
        for i in range(args.rounds):
            name = f"lat{i}"
            t0 = time.monotonic()
            await api.create(cc_path, cc(name, EXAMPLE_SPEC))
            t_children = await until(
                lambda n=name: _ge(count_children(n), EXAMPLE_CHILDREN), 30)
            t_ready = await until(lambda n=name: ready(n), 60)
            await until(lambda n=name: _eq(urls(n), 2), 30)
            t1 = time.monotonic()
            await api.merge_patch(f"{cc_path}/{name}/scale", {"spec": {"replicas": 3}})
            t_urls = await until(lambda n=name: _eq(urls(n), 3), 30)
            rounds.append({"children_s": round(t_children - t0, 3),
                           "ready_s": round(t_ready - t0, 3),
                           "scale_urls_s": round(t_urls - t1, 3)})
            log(f"round {i}: {rounds[-1]}")
        result["latency"] = {"rounds": rounds, **{
            f"{k}_median": round(statistics.median(r[k] for r in rounds), 3)
            for k in ("children_s", "ready_s", "scale_urls_s")}, **{
            f"{k}_max": max(r[k] for r in rounds)
            for k in ("children_s", "ready_s", "scale_urls_s")}}
        for i in range(args.rounds):
            await api.delete(f"{cc_path}/lat{i}")
        await asyncio.sleep(2)

        # (b) N clusters at once
        log(f"applying {args.clusters} ChatClusters at once")
        samples: list[dict[str, float]] = []
        cpu_start, _ = proc_sample(op.pid)
        t0 = time.monotonic()
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                cpu, rss = proc_sample(op.pid)
                items = (await api.request("GET", cc_path))["items"]
                n_ready = sum(any(c["type"] == "Ready" and c["status"] == "True"
                                  for c in (o.get("status") or {}).get("conditions") or [])
                              for o in items)
                # the last children render() lists: one per-replica Service per cluster
                n_done = sum(svc["metadata"]["name"].startswith("load") for svc in
                             await api.list(resource_path("v1", "Service", ns),
                                            labels="app.kubernetes.io/component=socket"))
                samples.append({"t": round(time.monotonic() - t0, 2),
                                "cpu_s": round(cpu - cpu_start, 3), "rss_mb": round(rss, 1),
                                "ready": n_ready, "socket_services": n_done})
                await asyncio.sleep(0.25)

        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(api.create(cc_path, cc(f"load{i:03d}", LOAD_SPEC))
                               for i in range(args.clusters)))
        t_applied = time.monotonic() - t0
        deadline = t0 + args.load_timeout
        while time.monotonic() < deadline:
            if samples and samples[-1]["ready"] >= args.clusters:
                break
            await asyncio.sleep(0.25)
        t_all = time.monotonic() - t0
        children_done = next((x["t"] for x in samples
                              if x["socket_services"] >= 2 * args.clusters), None)
        await asyncio.sleep(2)  # a tail of samples after the burst
        stop.set()
        await sampling
        all_ready = bool(samples) and samples[-1]["ready"] >= args.clusters
        result["load"] = {
            "clusters": args.clusters, "applied_s": round(t_applied, 2),
            "all_ready": all_ready, "all_ready_s": round(t_all, 2) if all_ready else None,
            "all_children_created_s": children_done,
            "peak_rss_mb": max(s["rss_mb"] for s in samples),
            "cpu_s": samples[-1]["cpu_s"],
            "mean_cpu_pct": round(100 * samples[-1]["cpu_s"] / max(samples[-1]["t"], 0.01), 1),
            "samples": samples}
        log(f"load: {({k: v for k, v in result['load'].items() if k != 'samples'})}")
        result["targets"] = {
            "children_within_2s": result["latency"]["children_s_max"] <= 2.0,
            "urls_within_5s_of_scale": result["latency"]["scale_urls_s_max"] <= 5.0,
            "100_clusters_within_60s": all_ready and t_all <= 60.0,
            "rss_at_most_150mb": result["load"]["peak_rss_mb"] <= 150.0}
    finally:
        op.terminate()
        try:
            op.wait(timeout=20)
        except subprocess.TimeoutExpired:
            op.kill()
        await api.delete(resource_path("v1", "Namespace", None, ns))
        await api.close()
    return result


async def _ge(coro: Any, n: int) -> bool:
    return bool(await coro >= n)


async def _eq(coro: Any, n: int) -> bool:
    return bool(await coro == n)


def plot(results: dict[str, Any], png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"no matplotlib here: run `python-with-matplotlib {sys.argv[0]} --plot "
            f"{png.with_suffix('.json')}`")
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    rounds = results["latency"]["rounds"]
    keys = [("children_s", "apply -> all children", 2.0), ("ready_s", "apply -> Ready", None),
            ("scale_urls_s", "scale -> 3 URLs", 5.0)]
    for x, (key, _, target) in enumerate(keys):
        values = [r[key] for r in rounds]
        ax1.scatter([x] * len(values), values, alpha=0.7)
        ax1.plot([x - 0.25, x + 0.25], [statistics.median(values)] * 2, color="black")
        if target:
            ax1.plot([x - 0.35, x + 0.35], [target] * 2, color="red", linestyle="--")
    ax1.set_xticks(range(len(keys)), [k[1] for k in keys])
    ax1.set_ylabel("seconds")
    ax1.set_title(f"one ChatCluster ({len(rounds)} rounds; red: target)")
    load = results["load"]
    s = load["samples"]
    t = [x["t"] for x in s]
    ax2.plot(t, [x["rss_mb"] for x in s], label="operator RSS (MB)", color="tab:blue")
    ax2.plot(t, [x["ready"] for x in s], label="ChatClusters Ready", color="tab:green")
    ax2.plot(t, [x["socket_services"] / 2 for x in s], label="ChatClusters with all children",
             color="tab:purple", linestyle=":")
    cpu = [0.0] + [100 * (b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 0.01)
                   for a, b in itertools.pairwise(s)]
    ax2.plot(t, cpu, label="operator CPU %", color="tab:orange", alpha=0.6)
    ax2.axhline(150, color="tab:blue", linestyle="--", linewidth=0.8)
    ax2.set_xlabel("seconds since the apply of all clusters")
    ax2.set_title(f"{load['clusters']} ChatClusters at once: all Ready in "
                  f"{load['all_ready_s']} s, peak RSS {load['peak_rss_mb']} MB")
    ax2.legend(loc="center right")
    fig.suptitle(f"chatcluster operator bench {results['timestamp']}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--load-timeout", type=float, default=180.0)
    p.add_argument("--plot", type=Path, default=None, help="only plot this results file")
    args = p.parse_args()
    if args.plot:
        plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png"))
        return
    if not os.environ.get("KUBECONFIG"):
        sys.exit("bench/operator_bench.py: no KUBECONFIG: eval \"$(scripts/k8s-testenv up)\" first")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.stamp = stamp
    results = {"timestamp": stamp, "machine": {"cpus": os.cpu_count(),
                                               "loadavg_at_start": os.getloadavg(),
                                               "python": platform.python_version()},
               "params": {k: v for k, v in vars(args).items() if k not in ("plot", "stamp")},
               **asyncio.run(run(args))}
    out = RESULTS / f"operator-{stamp}.json"
    out.write_text(json.dumps(results, indent=2))
    plot(results, out.with_suffix(".png"))
    print(out)


if __name__ == "__main__":
    main()
