"""``chatcluster operator``: kopf's watches feed the WorkQueue; the Lease gates it.

kopf is used for what it is good at: watching, reconnecting and a liveness endpoint. Only
``kopf.on.event`` handlers are registered, which never write to the objects (no progress
annotations, no finalizers), so a restart with nothing to do writes nothing and a passive
instance writes nothing at all. Retries with backoff and one-at-a-time per cluster are the
WorkQueue's job; leadership is the LeaderLease's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from chatcluster.adapters.kubernetes.api import (
    ApiError,
    Connection,
    KubeApi,
    resource_path,
    sleep_backoff,
)
from chatcluster_operator import GROUP, MANAGER, PLURAL, VERSION
from chatcluster_operator.cache import ObjectCache
from chatcluster_operator.leader import LeaderLease
from chatcluster_operator.queue import Key, WorkQueue
from chatcluster_operator.reconcile import Reconciler

log = logging.getLogger("chatcluster_operator")

# Children whose events re-trigger their cluster: status changes make conditions move, and
# a hand edit is put back within a second. Secrets are left to the periodic resync (watching
# every Secret in the cluster would put them all through this process).
# (group, version, plural, kind)
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments", "Deployment"), ("apps", "v1", "statefulsets", "StatefulSet"),
    ("", "v1", "services", "Service"), ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
)
CACHED_KINDS = frozenset(kind for *_, kind in WATCHED_CHILDREN)
MANAGED = f"app.kubernetes.io/managed-by={MANAGER}"
INSTANCE = "app.kubernetes.io/instance"


@dataclass
class OperatorOptions:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    liveness_port: int | None = None
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_name: str = "chatcluster-operator"
    lease_namespace: str | None = None
    workers: int = 8
    resync_s: float = 60.0
    log_level: str = "INFO"


def build_registry(queue: WorkQueue, known: set[Key], cache: ObjectCache,
                   on_stop: Callable[[], Awaitable[None]]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        # kopf owns SIGTERM/SIGINT; its shutdown takes seconds, the Lease should not wait.
        await on_stop()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if os.environ.get("KUBECONFIG") or not os.path.exists(
                "/var/run/secrets/kubernetes.io/serviceaccount/token"):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)

    # Handlers are coroutines on purpose: kopf runs plain functions in a thread pool, and the
    # cache and the queue belong to the event loop.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def cluster_event(event: kopf.RawEvent, name: str | None, namespace: str | None,
                      **_: Any) -> None:
        if not name or not namespace:
            return
        key = (namespace, name)
        if event["type"] == "DELETED":
            known.discard(key)
            queue.forget(key)
            return
        known.add(key)
        queue.add(key)

    def child_event(kind: str) -> Any:
        async def handle(event: kopf.RawEvent, labels: kopf.Labels, namespace: str | None,
                   **_: Any) -> None:
            obj = dict(event["object"])
            if event["type"] == "DELETED":
                cache.delete(obj, kind)
            else:
                cache.put(obj, kind)
            instance = labels.get(INSTANCE)
            if instance and namespace and (namespace, instance) in known:
                queue.add((namespace, instance))
        return handle

    for group, version, plural, kind in WATCHED_CHILDREN:
        kopf.on.event(group, version, plural, id=f"child-{plural}", registry=registry,
                      labels={"app.kubernetes.io/managed-by": MANAGER})(child_event(kind))
    return registry


def settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.peering.standalone = True  # the LeaderLease decides who acts
    s.posting.enabled = False  # no k8s Events from kopf's own logs: writes only by us
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.networking.error_backoffs = [1, 2, 5, 10]
    return s


async def run(opts: OperatorOptions) -> None:
    conn = Connection.from_env()
    api = KubeApi(conn)
    cache = ObjectCache()
    reconciler = Reconciler(api, cache=cache, cached_kinds=CACHED_KINDS)
    known: set[Key] = set()

    async def handle(key: Key) -> None:
        if key in known:
            await reconciler.reconcile(*key)

    queue = WorkQueue(handle, workers=opts.workers)

    async def prime_then_resume() -> None:
        """Read every child once before acting, so that the first passes compare against
        what exists (an empty cache would re-apply everything: no change, but writes)."""
        scopes: list[str | None] = list(opts.namespaces) or [None]
        for attempt in itertools.count():
            try:
                for (group, version, _, kind), ns in itertools.product(WATCHED_CHILDREN,
                                                                       scopes):
                    api_version = f"{group}/{version}" if group else version
                    for item in await api.list(resource_path(api_version, kind, ns),
                                               labels=MANAGED):
                        cache.put(item, kind)
                break
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("could not read the children yet: %s", exc)
                await sleep_backoff(attempt)
        if lease.leading:
            for key in list(known):
                queue.add(key)
            queue.resume()

    priming: list[asyncio.Task[None]] = []

    def on_leadership(leading: bool) -> None:
        if leading:
            priming.append(asyncio.create_task(prime_then_resume()))
        else:
            queue.pause()

    lease = LeaderLease(api, opts.lease_namespace or os.environ.get("POD_NAMESPACE")
                        or conn.namespace, opts.lease_name, opts.identity,
                        on_change=on_leadership)

    async def resync() -> None:
        while True:
            await asyncio.sleep(opts.resync_s)
            for key in list(known):
                queue.add(key)

    async def release() -> None:
        queue.pause()
        await lease.release()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    liveness = (f"http://0.0.0.0:{opts.liveness_port}/healthz"
                if opts.liveness_port is not None else None)
    log.info("operator %s starting (%s)", opts.identity,
             ", ".join(opts.namespaces) if opts.namespaces else "all namespaces")
    tasks = [asyncio.create_task(queue.run(), name="queue"),
             asyncio.create_task(lease.run(), name="lease"),
             asyncio.create_task(resync(), name="resync"),
             asyncio.create_task(kopf.operator(
                 registry=build_registry(queue, known, cache, release), settings=settings(),
                 standalone=True, clusterwide=not opts.namespaces,
                 namespaces=opts.namespaces, liveness_endpoint=liveness,
                 stop_flag=stop), name="kopf")]
    try:
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        await release()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()
        log.info("operator %s stopped", opts.identity)


def main(opts: OperatorOptions) -> int:
    logging.basicConfig(level=opts.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf's own chatter (every watch event at DEBUG, "starting" lines at INFO) is not ours.
    logging.getLogger("kopf").setLevel(max(logging.WARNING, logging.getLevelName(opts.log_level)))
    asyncio.run(run(opts))
    return 0
