"""The chart's RBAC is exactly what the operator's code does: no less (it would fail with 403
in a real cluster, where the tests' admin kubeconfig hides it) and no more (least privilege).

What the code does is recorded, not listed by hand: the Reconciler runs against an in-memory
API that logs every request, for ChatClusters that use every spec option, and the LeaderLease
takes and renews its Lease the same way. kopf's watches are the ones runner.py registers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatcluster.adapters.kubernetes.api import ApiError, KubeApi
from chatcluster_operator import GROUP, PLURAL
from chatcluster_operator.leader import LeaderLease
from chatcluster_operator.reconcile import Reconciler
from chatcluster_operator.runner import WATCHED_CHILDREN
from tests.packaging.conftest import CHART, Cluster, ensure_crd, run, wait_for

# (apiGroup, resource-or-resource/subresource, verb)
Permission = tuple[str, str, str]
PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)"
                  r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)"
                  r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")

SPECS: dict[str, dict[str, Any]] = {
    "dev backends, ingress with TLS, generated JWT key": {
        "backends": {"dev": True},
        "ingress": {"host": "chat.example", "className": "nginx",
                    "tls": {"secretName": "chat-tls"}}},
    "backends and JWT key by secret reference, no ingress": {
        "backends": {"mongodb": {"secretRef": {"name": "b", "key": "mongodb"}},
                     "kafka": {"secretRef": {"name": "b", "key": "kafka"}},
                     "redis": {"secretRef": {"name": "b", "key": "redis"}}},
        "jwtKey": {"secretRef": {"name": "jwt", "key": "key"}}},
}


class RecordingApi(KubeApi):
    """An in-memory API server that remembers every request as an RBAC permission."""

    def __init__(self) -> None:  # no connection: nothing leaves the process
        self.objects: dict[str, dict[str, Any]] = {}
        self.used: set[Permission] = set()
        self.extra_items: dict[str, list[dict[str, Any]]] = {}

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: Mapping[str, str] | None = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        match = PATH.match(path)
        assert match, path
        group, resource = match["group"] or "", match["resource"]
        if match["sub"]:
            resource += "/" + match["sub"]
        verb = {"GET": "get" if match["name"] else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[method]
        self.used.add((group, resource, verb))
        if content_type == "application/apply-patch+yaml":
            # Server-side apply of an object that does not exist yet creates it, which the
            # API server authorizes as `create` as well.
            self.used.add((group, resource, "create"))
        if verb == "list":
            return {"items": self.extra_items.get(path, [])}
        if verb == "get":
            if path not in self.objects:
                raise ApiError(404, "NotFound", path)
            return self.objects[path]
        if verb == "create":
            self.objects[f"{path}/{body['metadata']['name']}"] = dict(body)
        elif verb in ("update", "patch") and not match["sub"]:
            self.objects[path] = dict(body)
        return dict(body or {})


def recorded_permissions() -> set[Permission]:
    api = RecordingApi()

    async def exercise() -> None:
        for i, spec in enumerate(SPECS.values()):
            name, namespace = f"chat{i}", "tenant"
            api.objects[f"/apis/{GROUP}/v1alpha1/namespaces/{namespace}/{PLURAL}/{name}"] = {
                "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{i}",
                             "generation": 1}, "spec": spec}
            # Left over from an older spec, to be pruned: a scaled-down replica's Service, and
            # an Ingress (the second spec has none).
            stale = {"namespace": namespace, "ownerReferences": [{"uid": f"uid-{i}"}]}
            api.extra_items[f"/api/v1/namespaces/{namespace}/services"] = [
                {"metadata": {"name": f"{name}-socket-9", **stale}}]
            api.extra_items[f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses"] = [
                {"metadata": {"name": f"{name}-old", **stale}}]
            await Reconciler(api).reconcile(namespace, name)
        lease = LeaderLease(api, "operator-ns", "chatcluster-operator", "me")
        assert await lease.try_acquire_or_renew()  # creates the Lease
        assert await lease.try_acquire_or_renew()  # renews it

    asyncio.run(exercise())
    used = {p for p in api.used if p[1] != "leases"}
    assert ("coordination.k8s.io", "leases", "update") in api.used
    # kopf's watches: a list, then a watch, of the ChatClusters and of every watched child,
    # and of CRDs (to notice resources being added or removed).
    watched = [(GROUP, PLURAL), ("apiextensions.k8s.io", "customresourcedefinitions"),
               *((group, plural) for group, _version, plural, *_ in WATCHED_CHILDREN)]
    for group, plural in watched:
        used |= {(group, plural, "list"), (group, plural, "watch")}
    return used


def chart_rules() -> dict[str, list[dict[str, Any]]]:
    """The rendered ClusterRole and Role of the operator, by kind."""
    import os
    import shutil

    helm = os.environ.get("HELM") or shutil.which("helm")
    if not helm:
        pytest.skip("no Helm: HELM is not set and helm is not on PATH "
                    '(run eval "$(scripts/k8s-testenv up)" first)')
    docs = [d for d in yaml.safe_load_all(run(helm, "template", "chatcluster-operator", CHART,
                                              "--kube-version", "v1.37.0").stdout) if d]
    return {d["kind"]: d["rules"] for d in docs
            if d["kind"] in ("ClusterRole", "Role")
            and d["metadata"]["name"] == "chatcluster-operator"}


def granted(rules: list[dict[str, Any]]) -> set[Permission]:
    return {(group, resource, verb) for rule in rules if not rule.get("resourceNames")
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def test_the_cluster_role_is_exactly_what_the_operator_does() -> None:
    needed = recorded_permissions()
    given = granted(chart_rules()["ClusterRole"])
    assert needed - given == set(), "the operator would be refused (add to clusterrole.yaml)"
    assert given - needed == set(), "granted but never used (remove from clusterrole.yaml)"


def test_the_role_allows_only_the_leader_lease_in_its_own_namespace() -> None:
    rules = chart_rules()["Role"]
    assert granted(rules) == {("coordination.k8s.io", "leases", "create")}
    (named,) = [r for r in rules if r.get("resourceNames")]
    assert named["resources"] == ["leases"] and sorted(named["verbs"]) == ["get", "update"]
    # ...and it is the Lease the Deployment tells the operator to use.
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert '--lease-name={{ include "chatcluster-operator.leaseName" . }}' in deployment
    assert named["resourceNames"] == ["chatcluster-operator"]


def test_the_operator_works_with_only_the_charts_permissions(cluster: Cluster, namespace: str,
                                                             tmp_path: Path) -> None:
    """The proof in a real API server: the chart is installed, then `chatcluster operator`
    runs here with its ServiceAccount's token (not the tests' admin) and the chart's own
    arguments, and brings the example ChatCluster to Ready=True without one refusal.
    It watches only the test's namespace, so it never meets other tests' ChatClusters."""
    release = f"cc-{uuid.uuid4().hex[:6]}"
    full = f"{release}-chatcluster-operator"
    cluster.helm("install", release, CHART, "--namespace", namespace, "--wait",
                 "--timeout", "180s")
    try:
        ensure_crd(cluster)
        token = cluster.kubectl("create", "token", full, "-n", namespace,
                                "--duration=1h").stdout.strip()
        admin = yaml.safe_load(cluster.kubectl("config", "view", "--raw", "--minify").stdout)
        kubeconfig = tmp_path / "operator.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {
                "cluster": admin["clusters"][0]["name"], "user": "operator",
                "namespace": namespace}}],
            "current-context": "operator"}))
        assert cluster.kubectl("--kubeconfig", kubeconfig, "auth", "whoami", "-o",
                               "jsonpath={.status.userInfo.username}").stdout == (
            f"system:serviceaccount:{namespace}:{full}")

        deployment = yaml.safe_load(cluster.kubectl(
            "get", "deployment", full, "-n", namespace, "-o", "yaml").stdout)
        args = [a.replace("$(POD_NAMESPACE)", namespace).replace("$(POD_NAME)", "rbac-test")
                for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]]
        args = [a for a in args if not a.startswith(("--liveness=", "--log-level="))]
        log_path = tmp_path / "operator.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "chatcluster"), *args,
                 "--namespace", namespace, "--log-level", "DEBUG"],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(kubeconfig)})
        try:
            example = (CHART / "examples" / "chatcluster.yaml").read_text()
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=example)
            name = yaml.safe_load(example)["metadata"]["name"]

            def ready() -> bool:
                assert proc.poll() is None, log_path.read_text()[-4000:]
                cc = json.loads(cluster.kubectl("get", "chatcluster", name, "-n", namespace,
                                                "-o", "json").stdout)
                return any(c["type"] == "Ready" and c["status"] == "True"
                           for c in (cc.get("status") or {}).get("conditions") or [])

            wait_for(ready, 90, f"ChatCluster {name} Ready=True, reconciled as {full}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Without the log's "2026-11-26 10:54:03,403" prefix: its milliseconds can read 403.
        messages = [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "", line)
                    for line in log_path.read_text().splitlines()]
        refusals = [m for m in messages if "403" in m or "forbidden" in m.lower()]
        # kopf, told to watch one namespace, tries to list namespaces first and falls back to
        # the names it was given: the only refusal a namespace-scoped run may meet.
        unexpected = [line for line in refusals if "namespaces" not in line]
        assert unexpected == [], "\n".join(unexpected)
    finally:
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait",
                     "--timeout", "120s", check=False)
