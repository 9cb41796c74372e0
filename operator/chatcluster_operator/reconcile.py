"""Reconciler: one ChatCluster brought to what its spec says, then observed.

    get the ChatCluster ─► credentials (kept in <name>-credentials, generated once)
      ─► render() ─► for each child: GET, and server-side apply only if a field we own differs
      ─► delete per-replica Services / the Ingress no longer rendered
      ─► EndpointSlices of <name>-socket ─► ready URLs ─► <name>-socket-urls ConfigMap
      ─► conditions ─► status (patched only if it changed)

Level-based: it reads everything each time, so running it twice changes nothing, and an
operator restart makes no write when nothing changed (every write is preceded by a compare).
An API error becomes Ready=False with reason ReconcileFailed and is raised again, so the
queue retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from base64 import b64decode
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chatcluster.adapters.kubernetes.api import ApiError, KubeApi, object_path, resource_path
from chatcluster_operator import API_VERSION, KIND, MANAGER
from chatcluster_operator.cache import ObjectCache
from chatcluster_operator.observe import (
    Workload,
    conditions,
    is_subset,
    merge_conditions,
    ready_endpoint_pods,
    socket_urls,
)
from chatcluster_operator.render import (
    Credentials,
    Manifest,
    Owner,
    child_name,
    gateway_url,
    render,
    selector_string,
    socket_urls_configmap,
)
from chatcluster_operator.spec import ClusterSpec

log = logging.getLogger(__name__)

# Kinds whose number varies with the spec (per-replica Services, the optional Ingress): what
# render() no longer lists is deleted. Everything else lives as long as the ChatCluster.
PRUNED = (("v1", "Service"), ("networking.k8s.io/v1", "Ingress"))


class ReconcileError(Exception):
    """Raised after the status says what failed, so that the queue retries with backoff."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cluster_path(namespace: str, name: str | None = None, subresource: str | None = None
                 ) -> str:
    return resource_path(API_VERSION, KIND, namespace, name, subresource)


class Reconciler:
    """``cache`` (optional) holds the watched kinds (``cached_kinds``) as the watches last saw
    them; without it every child is read with a GET."""

    def __init__(self, api: KubeApi, *, cache: ObjectCache | None = None,
                 cached_kinds: frozenset[str] = frozenset(), concurrency: int = 32,
                 new_secret: Callable[[], str] = lambda: secrets.token_urlsafe(48),
                 clock: Callable[[], str] = _now) -> None:
        self.api = api
        self.cache = cache
        self.cached_kinds = cached_kinds if cache is not None else frozenset()
        self.new_secret = new_secret
        self.clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self.writes = 0  # applies, deletions and status patches made (tests, benchmark)

    async def credentials(self, namespace: str, name: str
                          ) -> tuple[Credentials, dict[str, Any] | None]:
        """The kept credentials (new ones if there are none yet) and the Secret itself."""
        secret = await self.api.get(resource_path("v1", "Secret", namespace,
                                                  child_name(name, "credentials")))
        data = (secret or {}).get("data") or {}

        def read(key: str) -> str | None:
            return b64decode(data[key]).decode() if key in data else None

        return Credentials(admin_token=read("admin-token") or self.new_secret(),
                           jwt_secret=read("jwt-secret") or self.new_secret()), secret

    async def ensure(self, obj: Manifest, known: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
        """The live object, applied first if it lacks or differs in a field we set.
        ``known``: the live object if the caller has just read it."""
        meta = obj["metadata"]
        async with self._limit:
            if known is not None:
                live: dict[str, Any] | None = known
            elif self.cache is not None and obj["kind"] in self.cached_kinds:
                live = self.cache.get(obj["kind"], meta["namespace"], meta["name"])
            else:
                live = await self.api.get(object_path(obj))
            # apiVersion and kind: list items and watch events of a LIST do not carry them
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
            if live is not None and is_subset(body, live):
                return live
            result = await self.api.apply(obj, manager=MANAGER)
            if self.cache is not None and obj["kind"] in self.cached_kinds:
                self.cache.put(result, obj["kind"])
            self.writes += 1
            log.info("%s %s %s/%s", "created" if live is None else "updated", obj["kind"],
                     meta["namespace"], meta["name"])
            return result

    async def prune(self, owner: Owner, desired: list[Manifest]) -> None:
        keep = {(m["kind"], m["metadata"]["name"]) for m in desired}
        for api_version, kind in PRUNED:
            items = await self.select(api_version, kind, owner.namespace, {
                "app.kubernetes.io/instance": owner.name,
                "app.kubernetes.io/managed-by": MANAGER})
            for item in items:
                meta = item["metadata"]
                owned = any(ref.get("uid") == owner.uid
                            for ref in meta.get("ownerReferences") or [])
                if owned and (kind, meta["name"]) not in keep:
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", kind)
                    if self.cache is not None:
                        self.cache.forget(ObjectCache.key(item, kind))
                    if await self.api.delete(object_path(item)):
                        self.writes += 1
                        log.info("deleted %s %s/%s", kind, owner.namespace, meta["name"])

    async def select(self, api_version: str, kind: str, namespace: str,
                     labels: dict[str, str]) -> list[dict[str, Any]]:
        if self.cache is not None and kind in self.cached_kinds:
            return self.cache.select(kind, namespace, labels)
        return await self.api.list(resource_path(api_version, kind, namespace),
                                   labels=",".join(f"{k}={v}" for k, v in labels.items()))

    async def reconcile(self, namespace: str, name: str) -> None:
        before = self.writes
        try:
            await self._reconcile(namespace, name)
        finally:
            # DEBUG: tests wait for this line to know a pass is over (and count its writes).
            log.debug("reconciled %s/%s: %d writes", namespace, name, self.writes - before)

    async def _reconcile(self, namespace: str, name: str) -> None:
        cluster = await self.api.get(cluster_path(namespace, name))
        if cluster is None or cluster["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes the children (owner references)
        meta = cluster["metadata"]
        owner = Owner(name=name, namespace=namespace, uid=meta["uid"])
        spec = ClusterSpec.parse(cluster.get("spec") or {})
        live: dict[tuple[str, str], dict[str, Any]] = {}
        error: str | None = None
        try:
            creds, secret = await self.credentials(namespace, name)
            desired = render(cluster.get("spec") or {}, name, namespace, owner.uid, creds)
            results = await asyncio.gather(*(
                self.ensure(obj, secret if obj["kind"] == "Secret" else None)
                for obj in desired))
            live = {(obj["kind"], obj["metadata"]["name"]): r
                    for obj, r in zip(desired, results, strict=True)}
            await self.prune(owner, desired)
        except ApiError as exc:
            error = f"{exc.status} {exc.reason}: {exc.message}"[:1000]
            log.warning("reconcile %s/%s failed: %s", namespace, name, error)

        slices = await self.select("discovery.k8s.io/v1", "EndpointSlice", namespace,
                                   {"kubernetes.io/service-name": child_name(name, "socket")})
        urls = socket_urls(spec, name, namespace, ready_endpoint_pods(slices))
        await self.ensure(socket_urls_configmap(owner, urls))

        def workload(kind: str, component: str, desired: int) -> Workload | None:
            return Workload.of(live.get((kind, child_name(name, component))), desired)

        sockets = workload("StatefulSet", "socket", spec.sockets.replicas)
        dev = ([workload("StatefulSet", c, 1) for c in ("mongodb", "kafka", "redis")]
               if spec.backends.dev else [])
        new_conditions = conditions(
            gateway=workload("Deployment", "gateway", spec.gateway.replicas), sockets=sockets,
            consumers=workload("Deployment", "consumers", spec.consumers.replicas),
            urls=urls, backends=dev, error=error)
        old = cluster.get("status") or {}
        generation = int(meta.get("generation") or 0)
        sts_status = (live.get(("StatefulSet", child_name(name, "socket"))) or {}).get(
            "status") or {}
        ready_replicas = int(sts_status.get("readyReplicas") or 0)
        status = {
            "observedGeneration": generation,
            "gatewayURL": gateway_url(spec, name, namespace),
            "socketURLs": urls,
            "sockets": {"replicas": int(sts_status.get("replicas") or 0),
                        "readyReplicas": ready_replicas,
                        "selector": selector_string(name, "socket"),
                        "summary": f"{ready_replicas}/{spec.sockets.replicas}"},
            "conditions": merge_conditions(new_conditions, old.get("conditions") or [],
                                           generation, self.clock()),
        }
        if not is_subset(status, old) or len(old.get("conditions") or []) != 4:
            await self.api.merge_patch(cluster_path(namespace, name, "status"),
                                       {"status": status}, manager=MANAGER)
            self.writes += 1
        if error is not None:
            raise ReconcileError(error)
