"""A small Kubernetes API client on plain dicts.

Why not a generated client: the gateway needs one watch and the operator a dozen verbs on a
dozen kinds; both speak JSON and both must stay light (the operator's RSS budget is 150 MB,
and the official generated client alone imports more than that). Authentication covers what
this project meets: a service account token in a pod, or a kubeconfig with a bearer token or a
client certificate (kind, the test control plane).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# Plural resource names of the kinds this project touches (apiVersion, kind) -> plural.
PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps", "Secret": "secrets", "Service": "services",
    "ServiceAccount": "serviceaccounts", "Pod": "pods", "Namespace": "namespaces",
    "Deployment": "deployments", "StatefulSet": "statefulsets",
    "PodDisruptionBudget": "poddisruptionbudgets", "Ingress": "ingresses",
    "Role": "roles", "RoleBinding": "rolebindings", "Lease": "leases",
    "EndpointSlice": "endpointslices", "ChatCluster": "chatclusters", "Event": "events",
    "CustomResourceDefinition": "customresourcedefinitions",
}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition"}


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    namespace: str = "default"

    @classmethod
    def from_env(cls) -> Connection:
        """KUBECONFIG (or ~/.kube/config) if present, else the pod's service account."""
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        if not path and Path("~/.kube/config").expanduser().exists():
            path = str(Path("~/.kube/config").expanduser())
        if path:
            return cls.from_kubeconfig(Path(path))
        if (SERVICE_ACCOUNT_DIR / "token").exists():
            return cls.in_cluster()
        raise ApiError(0, "NoConfig", "no KUBECONFIG, no ~/.kube/config and no service account")

    @classmethod
    def in_cluster(cls) -> Connection:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        ns_file = SERVICE_ACCOUNT_DIR / "namespace"
        return cls(server=f"https://{host}:{port}",
                   token=(SERVICE_ACCOUNT_DIR / "token").read_text().strip(),
                   ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
                   namespace=ns_file.read_text().strip() if ns_file.exists() else "default")

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Connection:
        config = yaml.safe_load(path.read_text()) or {}
        base = path.parent

        def named(section: str, name: str) -> dict[str, Any]:
            for item in config.get(section) or []:
                if item.get("name") == name:
                    value: dict[str, Any] = item.get(section[:-1]) or {}
                    return value
            raise ApiError(0, "BadConfig", f"{path}: no {section[:-1]} named {name!r}")

        context = named("contexts", config.get("current-context", ""))
        cluster = named("clusters", context.get("cluster", ""))
        user = named("users", context.get("user", "")) if context.get("user") else {}

        def file(value: str | None) -> str | None:
            return str(base / value) if value else None

        def data(value: str | None) -> str | None:
            if not value:
                return None
            # The client certificate and key must be files for ssl; keep them private.
            fd, name = tempfile.mkstemp(prefix="kubeconfig-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(value))
            return name

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(file(user["tokenFile"]) or "").read_text().strip()
        ca_data = cluster.get("certificate-authority-data")
        return cls(server=cluster["server"].rstrip("/"), token=token,
                   ca_file=file(cluster.get("certificate-authority")),
                   ca_data=base64.b64decode(ca_data) if ca_data else None,
                   cert_file=file(user.get("client-certificate"))
                   or data(user.get("client-certificate-data")),
                   key_file=file(user.get("client-key")) or data(user.get("client-key-data")),
                   insecure=bool(cluster.get("insecure-skip-tls-verify")),
                   namespace=context.get("namespace") or "default")

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file,
                                         cadata=self.ca_data.decode() if self.ca_data else None)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def resource_path(api_version: str, kind: str, namespace: str | None = None,
                  name: str | None = None, subresource: str | None = None) -> str:
    """``/api/v1/namespaces/ns/configmaps/name`` and the like."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [prefix]
    if namespace and kind not in CLUSTER_SCOPED:
        parts.append(f"namespaces/{quote(namespace)}")
    parts.append(PLURALS[kind])
    if name:
        parts.append(quote(name))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def object_path(obj: Mapping[str, Any], subresource: str | None = None) -> str:
    meta = obj["metadata"]
    return resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"],
                         subresource)


class KubeApi:
    """JSON verbs against one API server. Create it inside a running event loop."""

    def __init__(self, conn: Connection, *, timeout: float = 30.0) -> None:
        self.conn = conn
        headers = {"Accept": "application/json", "User-Agent": "chatcluster"}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        self._timeout = timeout
        self._session = aiohttp.ClientSession(
            base_url=conn.server, headers=headers,
            connector=aiohttp.TCPConnector(ssl=conn.ssl_context(), limit=64))

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        async with self._session.request(
                method, path, data=data, params=params,
                headers={"Content-Type": content_type} if data is not None else None,
                timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    status = json.loads(text)
                    raise ApiError(resp.status, status.get("reason", ""),
                                   status.get("message", text))
                except ValueError:
                    raise ApiError(resp.status, resp.reason or "", text) from None
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, *, labels: str | None = None,
                   fields: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v}
        items: list[dict[str, Any]] = (await self.request("GET", path, params=params))["items"]
        return items

    async def apply(self, obj: Mapping[str, Any], *, manager: str,
                    subresource: str | None = None, force: bool = True) -> dict[str, Any]:
        """Server-side apply: create or bring the fields this manager owns to ``obj``."""
        params = {"fieldManager": manager, "force": "true" if force else "false"}
        return await self.request("PATCH", object_path(obj, subresource), body=obj,
                                  params=params, content_type="application/apply-patch+yaml")

    async def merge_patch(self, path: str, patch: Mapping[str, Any], *,
                          manager: str | None = None) -> dict[str, Any]:
        params = {"fieldManager": manager} if manager else None
        return await self.request("PATCH", path, body=patch, params=params,
                                  content_type="application/merge-patch+json")

    async def create(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=obj)

    async def replace(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PUT", path, body=obj)

    async def delete(self, path: str) -> bool:
        """True if deleted, False if it was already gone."""
        try:
            await self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def watch(self, path: str, *, fields: str | None = None, labels: str | None = None,
                    resource_version: str | None = None, timeout_s: int = 240,
                    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) events until the server ends the watch (about ``timeout_s``)."""
        params = {"watch": "true", "timeoutSeconds": str(timeout_s),
                  "allowWatchBookmarks": "true"}
        for key, value in (("fieldSelector", fields), ("labelSelector", labels),
                           ("resourceVersion", resource_version)):
            if value:
                params[key] = value
        async with self._session.get(
                path, params=params,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_s + 30)) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", await resp.text())
            async for line in resp.content:
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]


async def sleep_backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> None:
    """Exponential backoff between reconnects: 0.5 s, 1 s, 2 s ... up to ``cap``."""
    await asyncio.sleep(min(cap, base * 2 ** min(attempt, 16)))
