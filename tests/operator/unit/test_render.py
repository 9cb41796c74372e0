"""render() for every spec option, without a cluster: names, labels, owner references,
replicas, resources, backends (dev or by Secret), ingress with and without TLS, the JWT key
generated or referenced, PodDisruptionBudgets, and that it is a pure function."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from chatcluster_operator.render import Credentials, render, socket_urls_configmap
from chatcluster_operator.render import Owner as RenderOwner

NS, NAME, UID = "team-a", "chat", "0b7c1d9e-1111-2222-3333-444455556666"
CREDS = Credentials(admin_token="admin-tok", jwt_secret="jwt-key")
SECRET_BACKENDS = {"mongodb": {"secretRef": {"name": "db", "key": "mongo"}},
                   "kafka": {"secretRef": {"name": "db", "key": "kafka"}},
                   "redis": {"secretRef": {"name": "cache"}}}
LABEL_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance",
              "app.kubernetes.io/component", "app.kubernetes.io/part-of",
              "app.kubernetes.io/managed-by"}


def run(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = render(spec, NAME, NS, UID, CREDS)
    by_key = {(m["kind"], m["metadata"]["name"]): m for m in out}
    assert len(by_key) == len(out), "two children with the same kind and name"
    return by_key


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def env(obj: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(obj)["env"]}


def secret_value(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_minimal_dev_spec_renders_every_child() -> None:
    m = run({"backends": {"dev": True}})
    assert set(m) == {
        ("ServiceAccount", "chat-gateway"), ("Role", "chat-gateway"),
        ("RoleBinding", "chat-gateway"), ("ConfigMap", "chat-config"),
        ("Secret", "chat-credentials"),
        ("Deployment", "chat-gateway"), ("Service", "chat-gateway"),
        ("PodDisruptionBudget", "chat-gateway"),
        ("StatefulSet", "chat-socket"), ("Service", "chat-socket"),
        ("Service", "chat-socket-0"), ("Service", "chat-socket-1"),
        ("PodDisruptionBudget", "chat-socket"),
        ("Deployment", "chat-consumers"), ("PodDisruptionBudget", "chat-consumers"),
        ("StatefulSet", "chat-mongodb"), ("Service", "chat-mongodb"),
        ("StatefulSet", "chat-kafka"), ("Service", "chat-kafka"),
        ("StatefulSet", "chat-redis"), ("Service", "chat-redis"),
    }


@pytest.mark.parametrize("spec", [{"backends": {"dev": True}},
                                  {"backends": SECRET_BACKENDS,
                                   "ingress": {"host": "chat.example.com",
                                               "tls": {"secretName": "tls"}}}])
def test_every_child_is_owned_and_labelled(spec: dict[str, Any]) -> None:
    for (kind, name), obj in run(spec).items():
        meta = obj["metadata"]
        assert meta["namespace"] == NS, (kind, name)
        assert meta["ownerReferences"] == [{
            "apiVersion": "chatcluster.dev/v1alpha1", "kind": "ChatCluster", "name": NAME,
            "uid": UID, "controller": True, "blockOwnerDeletion": True}], (kind, name)
        labels = meta["labels"]
        assert set(labels) == LABEL_KEYS, (kind, name)
        assert labels["app.kubernetes.io/instance"] == NAME
        assert labels["app.kubernetes.io/part-of"] == "chatcluster"
        assert labels["app.kubernetes.io/managed-by"] == "chatcluster-operator"
        if "template" in obj.get("spec", {}):
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            match = obj["spec"]["selector"]["matchLabels"]
            assert match.items() <= pod_labels.items(), (kind, name)


def test_defaults_mirror_the_crd() -> None:
    m = run({"backends": {"dev": True}})
    assert m[("Deployment", "chat-gateway")]["spec"]["replicas"] == 2
    assert m[("StatefulSet", "chat-socket")]["spec"]["replicas"] == 2
    assert m[("Deployment", "chat-consumers")]["spec"]["replicas"] == 1
    gw = container(m[("Deployment", "chat-gateway")])
    assert gw["image"] == "chatcluster:0.1.0"
    assert gw["imagePullPolicy"] == "IfNotPresent"
    assert "resources" not in gw


def test_replicas_and_resources_per_component() -> None:
    res = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    m = run({"image": "reg.example/chat:1.2", "backends": {"dev": True},
             "gateway": {"replicas": 3, "resources": res},
             "sockets": {"replicas": 5, "resources": {"limits": {"cpu": 2}}},
             "consumers": {"replicas": 2}})
    assert m[("Deployment", "chat-gateway")]["spec"]["replicas"] == 3
    assert container(m[("Deployment", "chat-gateway")])["resources"] == res
    sts = m[("StatefulSet", "chat-socket")]
    assert sts["spec"]["replicas"] == 5
    assert container(sts)["resources"] == {"limits": {"cpu": 2}}
    assert m[("Deployment", "chat-consumers")]["spec"]["replicas"] == 2
    assert "resources" not in container(m[("Deployment", "chat-consumers")])
    # one Service per replica, each selecting exactly its pod
    for i in range(5):
        svc = m[("Service", f"chat-socket-{i}")]
        assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == \
            f"chat-socket-{i}"
        assert svc["spec"]["ports"][0]["port"] == 80
    assert ("Service", "chat-socket-5") not in m
    for c in (m[("Deployment", "chat-gateway")], sts, m[("Deployment", "chat-consumers")]):
        assert container(c)["image"] == "reg.example/chat:1.2"


def test_containers_run_the_chatcluster_entry_points() -> None:
    m = run({"backends": {"dev": True}})
    gw = container(m[("Deployment", "chat-gateway")])
    assert gw["command"] == ["chatcluster"]
    assert gw["args"][0] == "gateway"
    assert gw["args"][gw["args"].index("--host") + 1] == "0.0.0.0"
    sock = container(m[("StatefulSet", "chat-socket")])
    args = sock["args"]
    assert args[0] == "socket"
    assert args[args.index("--replica-id") + 1] == "$(POD_NAME)"
    # The replica announces the same URL the operator publishes, so the gateway can order
    # the operator's list by the registry's load.
    assert args[args.index("--public-url") + 1] == "ws://$(POD_NAME).team-a.svc"
    assert container(m[("Deployment", "chat-consumers")])["args"][0] == "consumers"
    for obj in (m[("Deployment", "chat-gateway")], m[("StatefulSet", "chat-socket")],
                m[("Deployment", "chat-consumers")]):
        c = container(obj)
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["envFrom"] == [{"configMapRef": {"name": "chat-config"}}]


def test_socket_statefulset_has_a_stable_identity() -> None:
    m = run({"backends": {"dev": True}})
    sts = m[("StatefulSet", "chat-socket")]
    headless = m[("Service", "chat-socket")]
    assert sts["spec"]["serviceName"] == "chat-socket"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_dev_backends_are_in_cluster_urls() -> None:
    m = run({"backends": {"dev": True}})
    e = env(m[("Deployment", "chat-gateway")])
    assert e["CHAT_STORE_URL"] == "mongodb://chat-mongodb.team-a.svc:27017/chatcluster"
    assert e["CHAT_BUS_URL"] == "kafka://chat-kafka.team-a.svc:9092"
    assert e["CHAT_CACHE_URL"] == "redis://chat-redis.team-a.svc:6379/0"
    for component in ("mongodb", "kafka", "redis"):
        sts = m[("StatefulSet", f"chat-{component}")]
        assert sts["spec"]["replicas"] == 1
        assert sts["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    kafka_env = env(m[("StatefulSet", "chat-kafka")])
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://chat-kafka.team-a.svc:9092"


def test_secret_backends_are_secret_refs_and_no_dev_servers() -> None:
    m = run({"backends": SECRET_BACKENDS})
    assert not any(name.endswith(("-mongodb", "-kafka", "-redis")) for _, name in m)
    for kind, name in (("Deployment", "chat-gateway"), ("StatefulSet", "chat-socket"),
                       ("Deployment", "chat-consumers")):
        e = env(m[(kind, name)])
        assert e["CHAT_STORE_URL"] == {"secretKeyRef": {"name": "db", "key": "mongo"}}
        assert e["CHAT_BUS_URL"] == {"secretKeyRef": {"name": "db", "key": "kafka"}}
        assert e["CHAT_CACHE_URL"] == {"secretKeyRef": {"name": "cache", "key": "url"}}


def test_backend_namespace_defaults_to_namespace_and_name() -> None:
    assert run({"backends": {"dev": True}})[("ConfigMap", "chat-config")]["data"] == {
        "CHAT_NAMESPACE": "team-a-chat",
        "CHAT_SOCKET_URLS_CONFIGMAP": "team-a/chat-socket-urls"}
    cm = run({"backends": {"dev": True, "namespace": "shared1"}})[("ConfigMap", "chat-config")]
    assert cm["data"]["CHAT_NAMESPACE"] == "shared1"


def test_generated_jwt_key_goes_into_the_credentials_secret() -> None:
    m = run({"backends": {"dev": True}})
    secret = m[("Secret", "chat-credentials")]
    assert secret_value(secret, "jwt-secret") == "jwt-key"
    assert secret_value(secret, "admin-token") == "admin-tok"
    creds = json.loads(secret_value(secret, "credentials.json"))
    assert creds == {"jwt_secret": "jwt-key", "admin_token": "admin-tok", "app_id": "",
                     "app_secret": ""}
    for kind, name in (("Deployment", "chat-gateway"), ("StatefulSet", "chat-socket")):
        assert env(m[(kind, name)])["CHAT_JWT_SECRET"] == {
            "secretKeyRef": {"name": "chat-credentials", "key": "jwt-secret"}}
    assert env(m[("Deployment", "chat-gateway")])["CHAT_ADMIN_TOKEN"] == {
        "secretKeyRef": {"name": "chat-credentials", "key": "admin-token"}}


def test_given_jwt_key_is_referenced_not_copied() -> None:
    m = run({"backends": {"dev": True}, "jwtKey": {"secretRef": {"name": "mine"}}})
    secret = m[("Secret", "chat-credentials")]
    assert "jwt-secret" not in secret["data"]
    assert json.loads(secret_value(secret, "credentials.json"))["jwt_secret"] == ""
    assert env(m[("StatefulSet", "chat-socket")])["CHAT_JWT_SECRET"] == {
        "secretKeyRef": {"name": "mine", "key": "jwt-secret"}}


def test_gateway_may_read_only_its_socket_url_configmap() -> None:
    m = run({"backends": {"dev": True}})
    role = m[("Role", "chat-gateway")]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": ["chat-socket-urls"],
                              "verbs": ["get", "list", "watch"]}]
    gw_pod = m[("Deployment", "chat-gateway")]["spec"]["template"]["spec"]
    assert gw_pod["serviceAccountName"] == "chat-gateway"
    assert gw_pod["automountServiceAccountToken"] is True
    sock_pod = m[("StatefulSet", "chat-socket")]["spec"]["template"]["spec"]
    assert sock_pod["automountServiceAccountToken"] is False
    assert m[("RoleBinding", "chat-gateway")]["subjects"] == [
        {"kind": "ServiceAccount", "name": "chat-gateway", "namespace": NS}]


def test_no_ingress_without_spec_ingress() -> None:
    assert not any(kind == "Ingress" for kind, _ in run({"backends": {"dev": True}}))


def test_ingress_routes_each_replica_without_tls() -> None:
    m = run({"backends": {"dev": True}, "sockets": {"replicas": 3},
             "ingress": {"host": "chat.example.com", "className": "nginx"}})
    ing = m[("Ingress", "chat")]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert "tls" not in ing["spec"]
    [rule] = ing["spec"]["rules"]
    assert rule["host"] == "chat.example.com"
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert routes == {"/": "chat-gateway", "/chat-socket-0": "chat-socket-0",
                      "/chat-socket-1": "chat-socket-1", "/chat-socket-2": "chat-socket-2"}
    args = container(m[("StatefulSet", "chat-socket")])["args"]
    assert args[args.index("--public-url") + 1] == "ws://chat.example.com/$(POD_NAME)"


def test_ingress_with_tls_uses_wss() -> None:
    m = run({"backends": {"dev": True},
             "ingress": {"host": "chat.example.com", "tls": {"secretName": "chat-tls"}}})
    ing = m[("Ingress", "chat")]
    assert ing["spec"]["tls"] == [{"hosts": ["chat.example.com"], "secretName": "chat-tls"}]
    assert "ingressClassName" not in ing["spec"]
    args = container(m[("StatefulSet", "chat-socket")])["args"]
    assert args[args.index("--public-url") + 1] == "wss://chat.example.com/$(POD_NAME)"


def test_pod_disruption_budgets_cover_each_component() -> None:
    m = run({"backends": {"dev": True}})
    for component, workload in (("gateway", ("Deployment", "chat-gateway")),
                                ("socket", ("StatefulSet", "chat-socket")),
                                ("consumers", ("Deployment", "chat-consumers"))):
        pdb = m[("PodDisruptionBudget", f"chat-{component}")]
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == \
            m[workload]["spec"]["selector"]["matchLabels"]


def test_render_is_pure_and_deterministic() -> None:
    spec = {"backends": SECRET_BACKENDS, "ingress": {"host": "h.example"}}
    before = copy.deepcopy(spec)
    first = render(spec, NAME, NS, UID, CREDS)
    assert render(spec, NAME, NS, UID, CREDS) == first
    assert spec == before, "render() must not mutate its input"
    json.dumps(first)  # plain JSON, ready to send


def test_config_change_rolls_the_pods() -> None:
    def hash_of(spec: dict[str, Any]) -> str:
        sts = run(spec)[("StatefulSet", "chat-socket")]
        value: str = sts["spec"]["template"]["metadata"]["annotations"][
            "chatcluster.dev/config-hash"]
        return value
    assert hash_of({"backends": {"dev": True}}) == hash_of({"backends": {"dev": True}})
    assert hash_of({"backends": {"dev": True}}) != hash_of(
        {"backends": {"dev": True, "namespace": "other"}})


def test_socket_urls_configmap_is_a_json_list() -> None:
    cm = socket_urls_configmap(RenderOwner(NAME, NS, UID), ["ws://a", "ws://b"])
    assert cm["metadata"]["name"] == "chat-socket-urls"
    assert json.loads(cm["data"]["socket_urls"]) == ["ws://a", "ws://b"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == UID
