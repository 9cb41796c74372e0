"""render(): a ChatCluster -> the manifests of every child. Pure: no I/O, no clock, no random.

    ServiceAccount, Role, RoleBinding  <name>-gateway: may watch <name>-socket-urls only
    ConfigMap   <name>-config          CHAT_NAMESPACE, CHAT_SOCKET_URLS_CONFIGMAP
    Secret      <name>-credentials     admin token, credentials.json (+ generated JWT key)
    Deployment  <name>-gateway         + Service (port 80) + PodDisruptionBudget
    StatefulSet <name>-socket          + headless Service + Service <name>-socket-<i> per
                                         replica (stable identity, its own URL) + PDB
    Deployment  <name>-consumers       + PodDisruptionBudget
    Ingress     <name>                 (spec.ingress) / -> gateway, /<name>-socket-<i> -> replica i
    StatefulSet+Service <name>-mongodb|kafka|redis   (spec.backends.dev)

The socket-URL ConfigMap (<name>-socket-urls) is rendered by socket_urls_configmap(): its
content comes from the EndpointSlices, not from the spec.
"""

from __future__ import annotations

import hashlib
import json
from base64 import b64encode
from dataclasses import dataclass
from typing import Any

from chatcluster_operator import API_VERSION, KIND, MANAGER
from chatcluster_operator.spec import ClusterSpec, SecretRef

Manifest = dict[str, Any]

HTTP_PORT = 8080
CONSUMERS_PORT = 8081
STATE_DIR = "/etc/chatcluster"
# The image's user (see the Dockerfile); runAsNonRoot needs a numeric id to verify.
RUN_AS_USER = 10001
PART_OF = "chatcluster"
URLS_KEY = "socket_urls"


@dataclass(frozen=True)
class Credentials:
    """Secrets the operator generates once and keeps in <name>-credentials; passed in so that
    render() stays deterministic. ``jwt_secret`` is used only when spec.jwtKey is absent."""

    admin_token: str
    jwt_secret: str


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str


def child_name(cluster: str, component: str) -> str:
    return f"{cluster}-{component}"


def socket_pod_name(cluster: str, ordinal: int) -> str:
    return f"{cluster}-socket-{ordinal}"


def socket_url(spec: ClusterSpec, namespace: str, pod: str) -> str:
    """Where a client outside the cluster reaches one replica: its ingress route, or without an
    ingress the DNS name of its own Service (PROTOCOL.md §4)."""
    if spec.ingress is not None:
        scheme = "wss" if spec.ingress.tls_secret else "ws"
        return f"{scheme}://{spec.ingress.host}/{pod}"
    return f"ws://{pod}.{namespace}.svc"


def gateway_url(spec: ClusterSpec, name: str, namespace: str) -> str:
    if spec.ingress is not None:
        scheme = "https" if spec.ingress.tls_secret else "http"
        return f"{scheme}://{spec.ingress.host}"
    return f"http://{child_name(name, 'gateway')}.{namespace}.svc"


def labels(cluster: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "chatcluster", "app.kubernetes.io/instance": cluster,
            "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": MANAGER}


def selector(cluster: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "chatcluster", "app.kubernetes.io/instance": cluster,
            "app.kubernetes.io/component": component}


def selector_string(cluster: str, component: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(cluster, component).items())


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name, "uid": owner.uid,
            "controller": True, "blockOwnerDeletion": True}


def _meta(owner: Owner, name: str, component: str, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": owner.namespace, "labels": labels(owner.name, component),
            "ownerReferences": [owner_reference(owner)]}
    meta.update(extra)
    return meta


def _b64(value: str) -> str:
    return b64encode(value.encode()).decode()


def _secret_env(name: str, ref: SecretRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def backend_env(spec: ClusterSpec, owner: Owner) -> list[dict[str, Any]]:
    b = spec.backends
    if b.dev:
        host = f"{owner.namespace}.svc"
        return [
            {"name": "CHAT_STORE_URL",
             "value": f"mongodb://{owner.name}-mongodb.{host}:27017/chatcluster"},
            {"name": "CHAT_BUS_URL", "value": f"kafka://{owner.name}-kafka.{host}:9092"},
            {"name": "CHAT_CACHE_URL", "value": f"redis://{owner.name}-redis.{host}:6379/0"},
        ]
    assert b.mongodb and b.kafka and b.redis, "the CRD requires all three without dev"
    return [_secret_env("CHAT_STORE_URL", b.mongodb), _secret_env("CHAT_BUS_URL", b.kafka),
            _secret_env("CHAT_CACHE_URL", b.redis)]


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "runAsUser": RUN_AS_USER,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _probe(path: str, port: int, period: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "timeoutSeconds": 2, "failureThreshold": 3}


def _pod_spec(spec: ClusterSpec, owner: Owner, component: str, args: list[str], port: int,
              resources: dict[str, Any], extra_env: list[dict[str, Any]],
              config_hash: str, service_account: str | None = None) -> dict[str, Any]:
    creds = child_name(owner.name, "credentials")
    jwt = spec.jwt_key or SecretRef(creds, "jwt-secret")
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           *backend_env(spec, owner), _secret_env("CHAT_JWT_SECRET", jwt), *extra_env]
    container: dict[str, Any] = {
        "name": component, "image": spec.image, "imagePullPolicy": spec.image_pull_policy,
        "command": ["chatcluster"],
        "args": [*args, "--host", "0.0.0.0", "--port", str(port), "--state-dir", STATE_DIR,
                 "--log-level", spec.log_level],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "envFrom": [{"configMapRef": {"name": child_name(owner.name, "config")}}],
        "readinessProbe": _probe("/readyz", port, 2),
        "livenessProbe": _probe("/healthz", port, 10),
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "credentials", "mountPath": STATE_DIR, "readOnly": True}],
    }
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {
        "metadata": {"labels": labels(owner.name, component),
                     "annotations": {"chatcluster.dev/config-hash": config_hash}},
        "spec": {
            "automountServiceAccountToken": service_account is not None,
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER,
                                "fsGroup": RUN_AS_USER},
            "containers": [container],
            "volumes": [{"name": "credentials", "secret": {
                "secretName": creds, "items": [{"key": "credentials.json",
                                                "path": "credentials.json"}]}}],
        },
    }
    if service_account:
        pod["spec"]["serviceAccountName"] = service_account
    return pod


def _service(owner: Owner, name: str, component: str, sel: dict[str, str], port: int,
             target: int, *, headless: bool = False) -> Manifest:
    spec: dict[str, Any] = {"selector": sel, "ports": [
        {"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(owner, name, component), "spec": spec}


def _pdb(owner: Owner, component: str) -> Manifest:
    # maxUnavailable 1 (not minAvailable): a drain may always move one pod, even with a
    # single replica, and never more than one at a time.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(owner, child_name(owner.name, component), component),
            "spec": {"maxUnavailable": 1,
                     "selector": {"matchLabels": selector(owner.name, component)}}}


def _gateway_rbac(owner: Owner) -> list[Manifest]:
    name = child_name(owner.name, "gateway")
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(owner, name, "gateway"),
         "automountServiceAccountToken": True},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": _meta(owner, name, "gateway"),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": [child_name(owner.name, "socket-urls")],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(owner, name, "gateway"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}]},
    ]


def _dev_backend(owner: Owner, component: str, image: str, port: int,
                 env: list[dict[str, Any]], args: list[str] | None = None) -> list[Manifest]:
    """A single-node server for kind: data in an emptyDir (lost with the pod; dev only)."""
    name = child_name(owner.name, component)
    container: dict[str, Any] = {
        "name": component, "image": image,
        "ports": [{"name": "server", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 5},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    if args:
        container["args"] = args
    if env:  # an empty list would never compare equal: the server drops it
        container["env"] = env
    return [
        _service(owner, name, component, selector(owner.name, component), port, port,
                 headless=True),
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(owner, name, component),
         "spec": {"replicas": 1, "serviceName": name,
                  "selector": {"matchLabels": selector(owner.name, component)},
                  "template": {"metadata": {"labels": labels(owner.name, component)},
                               "spec": {"containers": [container],
                                        "volumes": [{"name": "data", "emptyDir": {}}]}}}},
    ]


def dev_backends(owner: Owner) -> list[Manifest]:
    kafka_host = f"{owner.name}-kafka.{owner.namespace}.svc"
    kafka_env = [{"name": k, "value": v} for k, v in (
        ("KAFKA_NODE_ID", "1"), ("KAFKA_PROCESS_ROLES", "broker,controller"),
        ("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://{kafka_host}:9092"),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
        ("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"),
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093"),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
        ("KAFKA_LOG_DIRS", "/data/kafka"))]
    return [
        *_dev_backend(owner, "mongodb", "mongo:7.0", 27017, [], ["--dbpath", "/data"]),
        *_dev_backend(owner, "kafka", "apache/kafka:3.9.0", 9092, kafka_env),
        *_dev_backend(owner, "redis", "redis:7.4", 6379, [], ["--dir", "/data"]),
    ]


def _ingress(spec: ClusterSpec, owner: Owner) -> Manifest:
    assert spec.ingress is not None
    ing = spec.ingress

    def route(path: str, service: str) -> dict[str, Any]:
        return {"path": path, "pathType": "Prefix", "backend": {
            "service": {"name": service, "port": {"name": "http"}}}}

    paths = [route("/", child_name(owner.name, "gateway"))]
    for i in range(spec.sockets.replicas):
        pod = socket_pod_name(owner.name, i)
        paths.append(route(f"/{pod}", pod))
    body: dict[str, Any] = {"rules": [{"host": ing.host, "http": {"paths": paths}}]}
    if ing.class_name:
        body["ingressClassName"] = ing.class_name
    if ing.tls_secret:
        body["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret}]
    # WebSockets stay open for hours: ingress-nginx's 60 s default would cut idle ones.
    annotations = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                   "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": _meta(owner, owner.name, "ingress", annotations=annotations),
            "spec": body}


def render(raw_spec: dict[str, Any], name: str, namespace: str, uid: str,
           credentials: Credentials) -> list[Manifest]:
    """Every child of the ChatCluster ``namespace/name`` (uid ``uid``), in apply order."""
    spec = ClusterSpec.parse(raw_spec)
    owner = Owner(name=name, namespace=namespace, uid=uid)
    n = child_name
    config = {"CHAT_NAMESPACE": spec.backends.namespace or f"{namespace}-{name}",
              "CHAT_SOCKET_URLS_CONFIGMAP": f"{namespace}/{n(name, 'socket-urls')}"}
    # Pods roll when what they read at start changes (env from the ConfigMap, URLs, refs).
    config_hash = hashlib.sha256(json.dumps(
        [config, backend_env(spec, owner), spec.jwt_key and spec.jwt_key.__dict__],
        sort_keys=True).encode()).hexdigest()[:16]

    creds_json = json.dumps({"jwt_secret": "" if spec.jwt_key else credentials.jwt_secret,
                             "admin_token": credentials.admin_token,
                             "app_id": "", "app_secret": ""}, sort_keys=True)
    secret_data = {"admin-token": _b64(credentials.admin_token),
                   "credentials.json": _b64(creds_json)}
    if spec.jwt_key is None:
        secret_data["jwt-secret"] = _b64(credentials.jwt_secret)

    gateway_env = [{"name": "CHAT_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": n(name, "credentials"), "key": "admin-token"}}}]
    gateway_pod = _pod_spec(spec, owner, "gateway", ["gateway"], HTTP_PORT,
                            spec.gateway.resources, gateway_env, config_hash,
                            service_account=n(name, "gateway"))
    public = socket_url(spec, namespace, "$(POD_NAME)")
    socket_pod = _pod_spec(spec, owner, "socket",
                           ["socket", "--replica-id", "$(POD_NAME)", "--public-url", public],
                           HTTP_PORT, spec.sockets.resources, [], config_hash)
    # Replicas drain (close with 1012, finish in-flight requests) on SIGTERM.
    socket_pod["spec"]["terminationGracePeriodSeconds"] = 30
    consumers_pod = _pod_spec(spec, owner, "consumers", ["consumers"], CONSUMERS_PORT,
                              spec.consumers.resources, [], config_hash)

    out: list[Manifest] = [
        *_gateway_rbac(owner),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(owner, n(name, "config"),
                                                                    "config"),
         "data": config},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": _meta(owner, n(name, "credentials"), "credentials"), "data": secret_data},
    ]
    if spec.backends.dev:
        out += dev_backends(owner)
    out += [
        _service(owner, n(name, "gateway"), "gateway", selector(name, "gateway"), 80, HTTP_PORT),
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": _meta(owner, n(name, "gateway"), "gateway"),
         "spec": {"replicas": spec.gateway.replicas,
                  "selector": {"matchLabels": selector(name, "gateway")},
                  "template": gateway_pod}},
        _pdb(owner, "gateway"),
        _service(owner, n(name, "socket"), "socket", selector(name, "socket"), HTTP_PORT,
                 HTTP_PORT, headless=True),
    ]
    for i in range(spec.sockets.replicas):
        pod = socket_pod_name(name, i)
        out.append(_service(owner, pod, "socket", {
            **selector(name, "socket"), "statefulset.kubernetes.io/pod-name": pod},
            80, HTTP_PORT))
    out += [
        {"apiVersion": "apps/v1", "kind": "StatefulSet",
         "metadata": _meta(owner, n(name, "socket"), "socket"),
         "spec": {"replicas": spec.sockets.replicas, "serviceName": n(name, "socket"),
                  # Replicas are independent: start and stop them all at once.
                  "podManagementPolicy": "Parallel",
                  "selector": {"matchLabels": selector(name, "socket")},
                  "template": socket_pod}},
        _pdb(owner, "socket"),
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": _meta(owner, n(name, "consumers"), "consumers"),
         "spec": {"replicas": spec.consumers.replicas,
                  "selector": {"matchLabels": selector(name, "consumers")},
                  "template": consumers_pod}},
        _pdb(owner, "consumers"),
    ]
    if spec.ingress is not None:
        out.append(_ingress(spec, owner))
    return out


def socket_urls_configmap(owner: Owner, urls: list[str]) -> Manifest:
    """What the gateway watches: the ready replicas' URLs, as a JSON list."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(owner, child_name(owner.name, "socket-urls"), "socket-urls"),
            "data": {URLS_KEY: json.dumps(urls)}}
