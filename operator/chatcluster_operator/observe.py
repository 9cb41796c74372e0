"""What the children say, turned into socket URLs and status conditions. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chatcluster_operator.render import socket_url
from chatcluster_operator.spec import ClusterSpec

CONDITION_TYPES = ("Ready", "GatewayReady", "SocketsReady", "ConsumersReady")


def ready_endpoint_pods(slices: list[dict[str, Any]]) -> set[str]:
    """Pods with a *ready* endpoint in any of these EndpointSlices. An absent ``ready`` means
    unknown, which the API says to read as ready; a terminating endpoint is never ready."""
    pods: set[str] = set()
    for eps in slices:
        for ep in eps.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            ref = ep.get("targetRef") or {}
            pod = ref.get("name") if ref.get("kind") == "Pod" else ep.get("hostname")
            if pod:
                pods.add(pod)
    return pods


def socket_urls(spec: ClusterSpec, name: str, namespace: str, ready_pods: set[str]
                ) -> list[str]:
    """The client-reachable URLs of the ready replicas of this cluster, by ordinal."""
    pattern = re.compile(rf"^{re.escape(name)}-socket-(\d+)$")
    ordinals = sorted(int(m.group(1)) for p in ready_pods if (m := pattern.match(p)))
    return [socket_url(spec, namespace, f"{name}-socket-{i}") for i in ordinals]


@dataclass(frozen=True)
class Workload:
    """Replica counts of a Deployment or StatefulSet (None: it does not exist yet)."""

    desired: int
    ready: int
    current: bool  # the controller has seen the latest spec

    @classmethod
    def of(cls, obj: dict[str, Any] | None, desired: int) -> Workload | None:
        if obj is None:
            return None
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation", 0)
        return cls(desired=desired, ready=int(status.get("readyReplicas") or 0),
                   current=int(status.get("observedGeneration") or 0) >= generation)

    @property
    def is_ready(self) -> bool:
        return self.current and self.ready >= self.desired


def _condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message}


def _workload_condition(type_: str, what: str, w: Workload | None) -> dict[str, Any]:
    if w is None:
        return _condition(type_, False, "NotCreated", f"{what} does not exist yet")
    if w.is_ready:
        return _condition(type_, True, "ReplicasReady", f"{w.ready}/{w.desired} {what} ready")
    reason = "ReplicasNotReady" if w.current else "RolloutInProgress"
    return _condition(type_, False, reason, f"{w.ready}/{w.desired} {what} ready")


def conditions(*, gateway: Workload | None, sockets: Workload | None,
               consumers: Workload | None, urls: list[str], backends: list[Workload | None],
               error: str | None) -> list[dict[str, Any]]:
    """The four conditions, without times (merge_conditions() adds them)."""
    gw = _workload_condition("GatewayReady", "gateway replicas", gateway)
    so = _workload_condition("SocketsReady", "socket replicas", sockets)
    if so["status"] == "True" and sockets is not None and len(urls) < sockets.desired:
        so = _condition("SocketsReady", False, "EndpointsNotReady",
                        f"{len(urls)}/{sockets.desired} socket URLs published")
    co = _workload_condition("ConsumersReady", "consumer replicas", consumers)
    parts = [gw, so, co]
    if error is not None:
        ready = _condition("Ready", False, "ReconcileFailed", error)
    elif any(b is None or not b.is_ready for b in backends):
        ready = _condition("Ready", False, "BackendsNotReady",
                           "the in-cluster dev backends are not ready yet")
    elif all(c["status"] == "True" for c in parts):
        ready = _condition("Ready", True, "AllComponentsReady",
                           f"gateway, {len(urls)} socket replicas and consumers are ready")
    else:
        waiting = [c["type"].removesuffix("Ready") for c in parts if c["status"] != "True"]
        ready = _condition("Ready", False, "ComponentsNotReady",
                           "waiting for " + ", ".join(waiting).lower())
    return [ready, *parts]


def merge_conditions(new: list[dict[str, Any]], old: list[dict[str, Any]], generation: int,
                     now: str) -> list[dict[str, Any]]:
    """Stamp observedGeneration and keep lastTransitionTime unless the status flipped."""
    previous = {c.get("type"): c for c in old}
    out = []
    for c in new:
        before = previous.get(c["type"])
        since = (before["lastTransitionTime"] if before and before.get("status") == c["status"]
                 and before.get("lastTransitionTime") else now)
        out.append({**c, "observedGeneration": generation, "lastTransitionTime": since})
    return out


def is_subset(desired: Any, live: Any) -> bool:
    """Does ``live`` already hold every field of ``desired``? (Fields the server or other
    managers added are ignored; lists must match element by element.)"""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(live, list) and len(desired) == len(live)
                and all(is_subset(d, v) for d, v in zip(desired, live, strict=True)))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if (isinstance(desired, int) and isinstance(live, str)) or (
            isinstance(desired, str) and isinstance(live, int)):
        return str(desired) == str(live)
    return bool(desired == live)
