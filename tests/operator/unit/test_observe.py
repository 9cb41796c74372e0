"""From children to status: ready EndpointSlice endpoints -> socket URLs (ingress or Service
DNS), workloads -> conditions, lastTransitionTime kept, and the compare that decides writes."""

from __future__ import annotations

from typing import Any

from chatcluster_operator.observe import (
    Workload,
    conditions,
    is_subset,
    merge_conditions,
    ready_endpoint_pods,
    socket_urls,
)
from chatcluster_operator.spec import ClusterSpec


def endpoint(pod: str, ready: bool | None, terminating: bool = False) -> dict[str, Any]:
    cond: dict[str, Any] = {"terminating": terminating}
    if ready is not None:
        cond["ready"] = ready
    return {"addresses": ["10.0.1.9"], "conditions": cond,
            "targetRef": {"kind": "Pod", "name": pod, "namespace": "ns"}}


def test_only_ready_endpoints_count() -> None:
    slices = [{"endpoints": [endpoint("c-socket-0", True), endpoint("c-socket-1", False)]},
              {"endpoints": [endpoint("c-socket-2", None),
                             endpoint("c-socket-3", True, terminating=True)]},
              {"endpoints": None}]
    assert ready_endpoint_pods(slices) == {"c-socket-0", "c-socket-2"}


def test_urls_by_ordinal_through_service_dns_or_ingress() -> None:
    pods = {"c-socket-10", "c-socket-2", "c-socket-0", "other-socket-1", "c-socket-x"}
    plain = ClusterSpec.parse({"backends": {"dev": True}})
    assert socket_urls(plain, "c", "ns", pods) == [
        "ws://c-socket-0.ns.svc", "ws://c-socket-2.ns.svc", "ws://c-socket-10.ns.svc"]
    tls = ClusterSpec.parse({"backends": {"dev": True},
                             "ingress": {"host": "h.example", "tls": {"secretName": "t"}}})
    assert socket_urls(tls, "c", "ns", {"c-socket-1"}) == ["wss://h.example/c-socket-1"]


def test_ready_only_when_every_component_is() -> None:
    ok = Workload(desired=2, ready=2, current=True)
    conds = conditions(gateway=ok, sockets=ok, consumers=Workload(1, 1, True),
                       urls=["a", "b"], backends=[], error=None)
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [
        ("Ready", "True", "AllComponentsReady"), ("GatewayReady", "True", "ReplicasReady"),
        ("SocketsReady", "True", "ReplicasReady"), ("ConsumersReady", "True", "ReplicasReady")]


def test_not_ready_reasons() -> None:
    ok = Workload(desired=2, ready=2, current=True)
    conds = {c["type"]: c for c in conditions(
        gateway=None, sockets=ok, consumers=Workload(1, 0, True), urls=["a"],
        backends=[], error=None)}
    assert conds["GatewayReady"]["reason"] == "NotCreated"
    assert conds["SocketsReady"]["reason"] == "EndpointsNotReady"  # 1 URL for 2 replicas
    assert conds["ConsumersReady"]["message"] == "0/1 consumer replicas ready"
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == "ComponentsNotReady"
    stale = conditions(gateway=Workload(1, 1, False), sockets=ok, consumers=ok, urls=["a", "b"],
                       backends=[], error=None)
    assert stale[1]["reason"] == "RolloutInProgress"


def test_errors_and_backends_decide_ready() -> None:
    ok = Workload(1, 1, True)
    failed = conditions(gateway=ok, sockets=ok, consumers=ok, urls=["a"], backends=[],
                        error="403 Forbidden: no")
    assert (failed[0]["status"], failed[0]["reason"], failed[0]["message"]) == (
        "False", "ReconcileFailed", "403 Forbidden: no")
    waiting = conditions(gateway=ok, sockets=ok, consumers=ok, urls=["a"],
                         backends=[ok, Workload(1, 0, True)], error=None)
    assert waiting[0]["reason"] == "BackendsNotReady"


def test_transition_time_kept_until_the_status_flips() -> None:
    new = [{"type": "Ready", "status": "True", "reason": "R", "message": "m"}]
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "T0"}]
    assert merge_conditions(new, old, 3, "T1") == [
        {**new[0], "observedGeneration": 3, "lastTransitionTime": "T0"}]
    flipped = [{"type": "Ready", "status": "False", "lastTransitionTime": "T0"}]
    assert merge_conditions(new, flipped, 3, "T1")[0]["lastTransitionTime"] == "T1"


def test_subset_compare_ignores_server_fields_but_not_ours() -> None:
    desired = {"spec": {"replicas": 2, "ports": [{"port": 80, "targetPort": 8080}],
                        "flag": False, "limits": {"cpu": 2}}}
    live = {"spec": {"replicas": 2, "ports": [{"port": 80, "targetPort": 8080,
                                               "protocol": "TCP"}],
                     "flag": False, "limits": {"cpu": "2"}, "clusterIP": "10.0.0.3"},
            "status": {}}
    assert is_subset(desired, live)
    assert not is_subset(desired, {**live, "spec": {**live["spec"], "replicas": 3}})
    assert not is_subset(desired, {**live, "spec": {**live["spec"], "ports": []}})
    assert not is_subset({"a": False}, {"a": 0})
    assert not is_subset({"a": {"b": 1}}, {})
