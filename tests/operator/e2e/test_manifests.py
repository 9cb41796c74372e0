"""Every variant render() produces is accepted by the real API server (server-side dry-run):
ingress with and without TLS, backends by Secret, a given JWT key, resources, dev backends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatcluster_operator.render import Credentials, render
from tests.operator.e2e.conftest import kubectl

REF = {"secretRef": {"name": "backends"}}
VARIANTS: dict[str, dict[str, Any]] = {
    "dev": {"backends": {"dev": True}},
    "secrets+ingress+tls": {
        "backends": {"mongodb": REF, "kafka": REF, "redis": REF, "namespace": "prod"},
        "ingress": {"host": "chat.example.com", "className": "nginx",
                    "tls": {"secretName": "chat-tls"}},
        "jwtKey": {"secretRef": {"name": "jwt", "key": "k"}}},
    "resources+ingress": {
        "backends": {"dev": True}, "sockets": {"replicas": 4, "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}},
        "gateway": {"replicas": 3, "resources": {"limits": {"cpu": 1}}},
        "ingress": {"host": "chat.local"}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_children_pass_server_dry_run(namespace: str, variant: str) -> None:
    manifests = render(VARIANTS[variant], "chat", namespace,
                       "6a0c7e0e-0000-4000-8000-000000000001", Credentials("a", "j"))
    doc = {"apiVersion": "v1", "kind": "List", "items": manifests}
    proc = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=test",
                   "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(manifests), proc.stdout
