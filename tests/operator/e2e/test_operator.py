"""The operator against a real API server: CRD, example to Ready, children and owner
references, scaling, unready pods, hand edits, errors as conditions, deletion, restarts and
a standby instance. Deadlines are generous; nothing here asserts speed."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

from tests.operator.e2e.conftest import (
    OperatorProcess,
    apply_example,
    condition,
    get,
    kubectl,
    socket_urls_in_configmap,
    wait_for,
    wait_ready,
)

# What the example (dev backends, 2 socket replicas, no ingress) owns.
EXAMPLE_CHILDREN = {
    ("ServiceAccount", "chat-gateway"), ("Role", "chat-gateway"),
    ("RoleBinding", "chat-gateway"), ("ConfigMap", "chat-config"),
    ("ConfigMap", "chat-socket-urls"), ("Secret", "chat-credentials"),
    ("Deployment", "chat-gateway"), ("Service", "chat-gateway"),
    ("PodDisruptionBudget", "chat-gateway"), ("StatefulSet", "chat-socket"),
    ("Service", "chat-socket"), ("Service", "chat-socket-0"), ("Service", "chat-socket-1"),
    ("PodDisruptionBudget", "chat-socket"), ("Deployment", "chat-consumers"),
    ("PodDisruptionBudget", "chat-consumers"),
    ("StatefulSet", "chat-mongodb"), ("Service", "chat-mongodb"),
    ("StatefulSet", "chat-kafka"), ("Service", "chat-kafka"),
    ("StatefulSet", "chat-redis"), ("Service", "chat-redis"),
}
CHILD_KINDS = ("serviceaccounts,roles,rolebindings,configmaps,secrets,deployments,services,"
               "statefulsets,poddisruptionbudgets,ingresses")


def children(namespace: str, name: str = "chat") -> dict[tuple[str, str], dict[str, Any]]:
    out = kubectl("-n", namespace, "get", CHILD_KINDS, "-o", "json",
                  "-l", f"app.kubernetes.io/instance={name}").stdout
    return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(out)["items"]}


def urls_everywhere(namespace: str, count: int) -> list[str] | None:
    """The URLs once the ConfigMap and the status agree on ``count`` of them."""
    in_cm = socket_urls_in_configmap(namespace)
    cc = get("chatcluster", "chat", namespace)
    in_status = ((cc or {}).get("status") or {}).get("socketURLs")
    if in_cm is not None and len(in_cm) == count and in_cm == in_status:
        return in_cm
    return None


def test_crd_is_installed_with_scale_and_columns(namespace: str) -> None:
    crd = json.loads(kubectl("get", "crd", "chatclusters.chatcluster.dev", "-o",
                             "json").stdout)
    assert condition(crd, "Established")["status"] == "True"
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.sockets.replicas"
    assert "status" in version["subresources"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready", "Sockets", "Gateway", "Age"]
    assert crd["spec"]["names"]["shortNames"] == ["cc"]


def test_example_creates_every_child_and_becomes_ready(namespace: str,
                                                       operator: OperatorProcess) -> None:
    apply_example(namespace)
    cc = wait_ready(namespace)
    uid = cc["metadata"]["uid"]
    owned = children(namespace)
    assert set(owned) == EXAMPLE_CHILDREN
    for key, obj in owned.items():
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == [
            ("ChatCluster", "chat", uid, True)], key
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "chatcluster-operator", key
        assert labels["app.kubernetes.io/part-of"] == "chatcluster", key
    urls = wait_for(lambda: urls_everywhere(namespace, 2), 10, "two URLs in ConfigMap+status")
    assert urls == [f"ws://chat-socket-0.{namespace}.svc", f"ws://chat-socket-1.{namespace}.svc"]
    for type_ in ("Ready", "GatewayReady", "SocketsReady", "ConsumersReady"):
        c = condition(cc, type_)
        assert c["status"] == "True", c
        assert c["observedGeneration"] == cc["metadata"]["generation"]
        assert c["reason"] and c["message"] and c["lastTransitionTime"]
    assert cc["status"]["gatewayURL"] == f"http://chat-gateway.{namespace}.svc"
    table = kubectl("-n", namespace, "get", "cc", "chat").stdout
    assert table.split("\n")[1].split()[:3] == ["chat", "True", "2/2"], table


def test_scale_subresource_updates_urls(namespace: str, operator: OperatorProcess) -> None:
    apply_example(namespace)
    wait_ready(namespace)
    kubectl("-n", namespace, "scale", "chatcluster/chat", "--replicas=3")
    urls = wait_for(lambda: urls_everywhere(namespace, 3), 10, "three URLs after scale to 3")
    assert urls[2] == f"ws://chat-socket-2.{namespace}.svc"
    assert get("service", "chat-socket-2", namespace) is not None
    kubectl("-n", namespace, "scale", "chatcluster/chat", "--replicas=1")
    wait_for(lambda: urls_everywhere(namespace, 1), 10, "one URL after scale to 1")
    # the per-replica Services of the removed replicas are pruned
    wait_for(lambda: get("service", "chat-socket-1", namespace) is None
             and get("service", "chat-socket-2", namespace) is None, 10,
             "per-replica Services pruned")


def test_unready_socket_pod_leaves_the_list(namespace: str, operator: OperatorProcess) -> None:
    apply_example(namespace)
    wait_ready(namespace)
    wait_for(lambda: urls_everywhere(namespace, 2), 10, "two URLs")

    def set_ready(status: str) -> None:
        patch = {"status": {"conditions": [{"type": "Ready", "status": status,
                                            "reason": "E2ETest"}]}}
        kubectl("-n", namespace, "patch", "pod", "chat-socket-1", "--subresource=status",
                "--type=strategic", "-p", json.dumps(patch))

    set_ready("False")
    urls = wait_for(lambda: urls_everywhere(namespace, 1), 10, "the unready URL to leave")
    assert urls == [f"ws://chat-socket-0.{namespace}.svc"]
    cc = get("chatcluster", "chat", namespace)
    assert condition(cc, "SocketsReady")["status"] == "False"
    assert condition(cc, "Ready")["status"] == "False"
    set_ready("True")
    wait_for(lambda: urls_everywhere(namespace, 2), 10, "the URL to come back")
    wait_ready(namespace)


def test_hand_edited_children_are_put_back(namespace: str, operator: OperatorProcess) -> None:
    apply_example(namespace)
    wait_ready(namespace)
    kubectl("-n", namespace, "scale", "deployment/chat-gateway", "--replicas=4")
    kubectl("-n", namespace, "patch", "configmap", "chat-config", "--type=merge",
            "-p", '{"data": {"CHAT_NAMESPACE": "hijacked"}}')
    kubectl("-n", namespace, "patch", "configmap", "chat-socket-urls", "--type=merge",
            "-p", '{"data": {"socket_urls": "[\\"ws://evil\\"]"}}')
    kubectl("-n", namespace, "delete", "service", "chat-socket-0")
    wait_for(lambda: (get("deployment", "chat-gateway", namespace) or {}).get(
        "spec", {}).get("replicas") == 1, 10, "gateway replicas put back to 1")
    wait_for(lambda: (get("configmap", "chat-config", namespace) or {}).get(
        "data", {}).get("CHAT_NAMESPACE") == f"{namespace}-chat", 10, "config put back")
    wait_for(lambda: urls_everywhere(namespace, 2), 10, "socket URLs put back")
    wait_for(lambda: get("service", "chat-socket-0", namespace), 10, "Service recreated")


def test_invalid_specs_are_refused_naming_the_field(namespace: str) -> None:
    def refused(doc: dict[str, Any]) -> str:
        body = {"apiVersion": "chatcluster.dev/v1alpha1", "kind": "ChatCluster",
                "metadata": {"name": "bad"}, **doc}
        proc = kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(body),
                       check=False)
        assert proc.returncode != 0, f"accepted: {doc}"
        return proc.stderr

    assert "spec.sockets.replicas" in refused(
        {"spec": {"sockets": {"replicas": 0}, "backends": {"dev": True}}})
    assert "spec.backends" in refused({"spec": {"backends": {"dev": False}}})
    assert "spec.backends" in refused({"spec": {}})
    assert "spec.ingress.host" in refused(
        {"spec": {"backends": {"dev": True}, "ingress": {"className": "nginx"}}})
    assert "spec.gateway.resources.requests" in refused(
        {"spec": {"backends": {"dev": True},
                  "gateway": {"resources": {"requests": {"cpu": "lots"}}}}})
    assert "metadata.name" in refused(
        {"metadata": {"name": "x" * 41}, "spec": {"backends": {"dev": True}}})
    # immutable: dev backends cannot be swapped for external ones
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "chatcluster.dev/v1alpha1", "kind": "ChatCluster",
        "metadata": {"name": "good"}, "spec": {"backends": {"dev": True}}}))
    ref = {"secretRef": {"name": "s"}}
    proc = kubectl("-n", namespace, "patch", "chatcluster", "good", "--type=merge", "-p",
                   json.dumps({"spec": {"backends": {"dev": False, "mongodb": ref,
                                                     "kafka": ref, "redis": ref}}}),
                   check=False)
    assert proc.returncode != 0
    assert "spec.backends.dev is immutable" in proc.stderr


def test_api_errors_become_conditions_and_are_retried(namespace: str,
                                                      operator: OperatorProcess) -> None:
    # A quota that refuses the per-replica Services: the reconcile fails part-way.
    kubectl("-n", namespace, "create", "quota", "few-services", "--hard=services=2")
    apply_example(namespace)

    def failed() -> dict[str, Any] | None:
        c = condition(get("chatcluster", "chat", namespace), "Ready")
        return c if c.get("reason") == "ReconcileFailed" else None

    c = wait_for(failed, 20, "Ready=False ReconcileFailed")
    assert c["status"] == "False"
    assert "exceeded quota" in c["message"]
    operator.wait_log("retrying in")
    kubectl("-n", namespace, "delete", "quota", "few-services")
    wait_ready(namespace, timeout=60)  # the next retry (backoff) succeeds


def test_deleting_the_chatcluster_removes_every_child(namespace: str,
                                                      operator: OperatorProcess) -> None:
    apply_example(namespace)
    wait_ready(namespace)
    assert len(children(namespace)) == len(EXAMPLE_CHILDREN)
    kubectl("-n", namespace, "delete", "chatcluster", "chat", "--wait=true")
    wait_for(lambda: not children(namespace), 60, "the garbage collector to delete children")
    pods = kubectl("-n", namespace, "get", "pods", "-o", "name").stdout.split()
    wait_for(lambda: not kubectl("-n", namespace, "get", "pods", "-o", "name").stdout.split(),
             60, f"pods to go (had {pods})")


def resource_versions(namespace: str) -> dict[tuple[str, str], str]:
    versions = {k: o["metadata"]["resourceVersion"] for k, o in children(namespace).items()}
    cc = get("chatcluster", "chat", namespace)
    assert cc is not None
    versions[("ChatCluster", "chat")] = cc["metadata"]["resourceVersion"]
    return versions


def test_operator_restart_writes_nothing(namespace: str,
                                         start_operator: Callable[[str], OperatorProcess]
                                         ) -> None:
    first = start_operator("op-first")
    first.wait_log("acquired leadership")
    apply_example(namespace)
    wait_ready(namespace)
    wait_for(lambda: urls_everywhere(namespace, 2), 10, "two URLs")
    # quiet: the last pass wrote nothing
    first.wait_log("reconciled " + namespace + "/chat: 0 writes")
    before = resource_versions(namespace)
    first.stop()
    # a clean stop (SIGTERM) releases the Lease: the successor need not wait for it to expire
    lease = get("lease", "chatcluster-operator", namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == ""
    second = start_operator("op-second")
    second.wait_log("acquired leadership")
    second.wait_log(f"reconciled {namespace}/chat: 0 writes")
    assert resource_versions(namespace) == before
    log = second.log()
    assert "created " not in log and "updated " not in log and "deleted " not in log, log


def test_second_instance_stays_passive_until_the_leader_dies(
        namespace: str, start_operator: Callable[[str], OperatorProcess]) -> None:
    leader = start_operator("op-leader")
    leader.wait_log("acquired leadership")
    standby = start_operator("op-standby")
    standby.wait_log("standing by")
    apply_example(namespace)
    wait_ready(namespace)
    leader.wait_log(f"reconciled {namespace}/chat")
    lease = get("lease", "chatcluster-operator", namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "op-leader"
    log = standby.log()
    assert "reconciled" not in log and "created " not in log, log
    # The leader dies without releasing the Lease: the standby takes over once it expires.
    leader.stop(signal.SIGKILL)
    standby.wait_log("acquired leadership", timeout=40)
    kubectl("-n", namespace, "scale", "chatcluster/chat", "--replicas=3")
    wait_for(lambda: urls_everywhere(namespace, 3), 10, "the new leader to publish 3 URLs")


def test_ingress_urls_and_removal(namespace: str, operator: OperatorProcess) -> None:
    spec = {"backends": {"dev": True}, "sockets": {"replicas": 2},
            "ingress": {"host": "chat.example.com", "tls": {"secretName": "chat-tls"}}}
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "chatcluster.dev/v1alpha1", "kind": "ChatCluster",
        "metadata": {"name": "chat"}, "spec": spec}))
    wait_ready(namespace)
    urls = wait_for(lambda: urls_everywhere(namespace, 2), 10, "two ingress URLs")
    assert urls == ["wss://chat.example.com/chat-socket-0", "wss://chat.example.com/chat-socket-1"]
    cc = get("chatcluster", "chat", namespace)
    assert cc is not None and cc["status"]["gatewayURL"] == "https://chat.example.com"
    ingress = get("ingress", "chat", namespace)
    assert ingress is not None
    paths = {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/", "/chat-socket-0", "/chat-socket-1"}
    # dropping spec.ingress deletes the Ingress and switches to Service DNS names
    kubectl("-n", namespace, "patch", "chatcluster", "chat", "--type=json",
            "-p", '[{"op": "remove", "path": "/spec/ingress"}]')
    wait_for(lambda: get("ingress", "chat", namespace) is None, 10, "the Ingress pruned")
    wait_for(lambda: urls_everywhere(namespace, 2) == [
        f"ws://chat-socket-0.{namespace}.svc", f"ws://chat-socket-1.{namespace}.svc"], 20,
        "Service DNS URLs")
