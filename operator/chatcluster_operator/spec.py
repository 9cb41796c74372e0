"""The ChatCluster spec as typed values.

The API server has already applied the CRD's defaults and validation; the defaults here
repeat them so that render() also works on a spec that never went through it (unit tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, default_key: str) -> SecretRef | None:
        if not raw or "secretRef" not in raw:
            return None
        ref = raw["secretRef"]
        return cls(name=ref["name"], key=ref.get("key") or default_key)


@dataclass(frozen=True)
class Component:
    replicas: int
    resources: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, default_replicas: int) -> Component:
        raw = raw or {}
        return cls(replicas=int(raw.get("replicas", default_replicas)),
                   resources=dict(raw.get("resources") or {}))


@dataclass(frozen=True)
class Backends:
    dev: bool
    namespace: str | None
    mongodb: SecretRef | None
    kafka: SecretRef | None
    redis: SecretRef | None


@dataclass(frozen=True)
class Ingress:
    host: str
    class_name: str | None
    tls_secret: str | None


@dataclass(frozen=True)
class ClusterSpec:
    image: str
    image_pull_policy: str
    log_level: str
    gateway: Component
    sockets: Component
    consumers: Component
    backends: Backends
    ingress: Ingress | None
    jwt_key: SecretRef | None

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> ClusterSpec:
        b = spec.get("backends") or {}
        ing = spec.get("ingress")
        return cls(
            image=spec.get("image") or "chatcluster:0.1.0",
            image_pull_policy=spec.get("imagePullPolicy") or "IfNotPresent",
            log_level=spec.get("logLevel") or "INFO",
            gateway=Component.parse(spec.get("gateway"), 2),
            sockets=Component.parse(spec.get("sockets"), 2),
            consumers=Component.parse(spec.get("consumers"), 1),
            backends=Backends(dev=bool(b.get("dev", False)), namespace=b.get("namespace"),
                              mongodb=SecretRef.parse(b.get("mongodb"), "url"),
                              kafka=SecretRef.parse(b.get("kafka"), "url"),
                              redis=SecretRef.parse(b.get("redis"), "url")),
            ingress=Ingress(host=ing["host"], class_name=ing.get("className"),
                            tls_secret=(ing.get("tls") or {}).get("secretName"))
            if ing else None,
            jwt_key=SecretRef.parse(spec.get("jwtKey"), "jwt-secret"),
        )
