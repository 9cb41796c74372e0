"""The Helm chart and manifests/: lint, values schema, manifests/ identical to the chart's
output, installed into a real control plane, every manifest accepted by the API server.

The control plane is scripts/k8s-testenv's (a real kube-apiserver; kwok plays the kubelet, so
the operator's pod becomes Running and Ready but runs nothing). Only the API server on loopback
is ever contacted.
"""

from __future__ import annotations

import difflib
import filecmp
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatcluster.cli.main import parser
from tests.packaging.conftest import (
    CHART,
    CRD_NAME,
    MANIFESTS,
    ROOT,
    Cluster,
    ensure_crd,
    run,
    wait_for,
)

RENDER = ROOT / "scripts" / "render-manifests"
MANIFEST_NAMESPACE = "chatcluster-system"


def differences(expected: Path, actual: Path) -> list[str]:
    """Paths under the two trees that are missing on one side or differ in content."""
    out: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        out.extend(f"{prefix}{name}: only in {expected}" for name in cmp.left_only)
        out.extend(f"{prefix}{name}: only in {actual}" for name in cmp.right_only)
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files,
                                               shallow=False)
        out.extend(f"{prefix}{name}: differs" for name in [*mismatch, *errors])
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(expected, actual), "")
    return out


def render(helm: str, out: Path) -> Path:
    """scripts/render-manifests into ``out``, with this Helm."""
    proc = subprocess.run([str(RENDER), "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "HELM": helm}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- manifests/ is the chart's output ------------------------------------------------------

def test_manifests_are_identical_to_the_chart_output(helm: str, tmp_path: Path) -> None:
    fresh = render(helm, tmp_path / "manifests")
    found = differences(fresh, MANIFESTS)
    diff = ""
    for entry in found[:1]:
        name = entry.split(":")[0]
        if entry.endswith("differs"):
            diff = "".join(difflib.unified_diff(
                (MANIFESTS / name).read_text().splitlines(True),
                (fresh / name).read_text().splitlines(True),
                f"manifests/{name}", f"rendered/{name}"))
    assert found == [], (
        f"manifests/ differs from the chart's output: run scripts/render-manifests\n{diff}")


def test_a_hand_edit_of_manifests_is_noticed(helm: str, tmp_path: Path) -> None:
    """The comparison above can fail: an edited, a removed and an extra file are all named."""
    fresh = render(helm, tmp_path / "fresh")
    edited = tmp_path / "edited"
    shutil.copytree(MANIFESTS, edited)
    deployment = next(edited.glob("*-deployment-*.yaml"))
    deployment.write_text(deployment.read_text().replace("replicas: 1", "replicas: 2"))
    (edited / "README.md").unlink()
    (edited / "99-extra.yaml").write_text("{}\n")
    found = differences(fresh, edited)
    assert f"{deployment.name}: differs" in found
    assert any(d.startswith("README.md: only in") for d in found)
    assert any(d.startswith("99-extra.yaml: only in") for d in found)


def test_manifests_hold_the_crd_rbac_operator_and_example() -> None:
    kinds = {}
    for path in MANIFESTS.glob("*.yaml"):
        for doc in load_all(path):
            kinds.setdefault(doc["kind"], []).append(doc["metadata"]["name"])
    assert kinds["CustomResourceDefinition"] == [CRD_NAME]
    assert kinds["Namespace"] == [MANIFEST_NAMESPACE]
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                 "Deployment"):
        assert kind in kinds, kind
    example = load_all(MANIFESTS / "examples" / "chatcluster.yaml")
    assert [d["kind"] for d in example] == ["ChatCluster"]
    # The CRD in manifests/ is the chart's, byte for byte (after the generated header).
    crd = (CHART / "crds" / f"{CRD_NAME}.yaml").read_text()
    assert (MANIFESTS / f"01-customresourcedefinition-{CRD_NAME}.yaml").read_text().endswith(crd)


# --- the chart ---------------------------------------------------------------------------

def test_helm_lint_strict_passes(helm: str) -> None:
    proc = run(helm, "lint", "--strict", CHART, "--kube-version", "v1.37.0")
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize(("setting", "message"), [
    ("operator.logLevel=LOUD", "/operator/logLevel"),
    ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("replicaCount=-1", "/replicaCount"),
    ("rbac.creat=true", "additional properties 'creat' not allowed"),
])
def test_values_schema_refuses_bad_values_naming_the_field(helm: str, setting: str,
                                                            message: str) -> None:
    proc = run(helm, "template", "x", CHART, "--kube-version", "v1.37.0", "--set", setting,
               check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_operator_pod_is_hardened(helm: str) -> None:
    docs = list(yaml.safe_load_all(run(helm, "template", "chatcluster-operator", CHART,
                                       "--kube-version", "v1.37.0").stdout))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["chatcluster"] and container["args"][0] == "operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"livenessProbe", "readinessProbe", "resources"} <= container.keys()
    # The arguments are the CLI's own (the Deployment would crash-loop on a typo).
    parsed = parser().parse_args(container["args"])
    assert parsed.command == "operator" and parsed.lease_namespace == "$(POD_NAMESPACE)"
    # The probes reach the port the operator serves its liveness endpoint on.
    port = int(next(a for a in container["args"] if a.startswith("--liveness="))
               .split("=")[1])
    assert container["ports"] == [{"name": "health", "containerPort": port, "protocol": "TCP"}]


# --- against the real control plane -------------------------------------------------------

def test_every_manifest_passes_server_side_dry_run(cluster: Cluster, namespace: str,
                                                   tmp_path: Path) -> None:
    """`kubectl apply --dry-run=server` of each file: the API server validates it (schema,
    CRD validation, admission) and stores nothing. The namespaced objects are moved to a fresh
    namespace, so that nothing here meets a real install in chatcluster-system."""
    ensure_crd(cluster)
    files = [*sorted(MANIFESTS.glob("*.yaml")), MANIFESTS / "examples" / "chatcluster.yaml"]
    assert len(files) >= 8
    for path in files:
        text = path.read_text().replace(f"namespace: {MANIFEST_NAMESPACE}",
                                        f"namespace: {namespace}")
        moved = tmp_path / path.name
        moved.write_text(text)
        proc = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", moved)
        for doc in load_all(path):
            assert f"{doc['metadata']['name']}" in proc.stdout, proc.stdout
        assert "(server dry run)" in proc.stdout, proc.stdout
    # Nothing was created by the dry runs.
    assert cluster.kubectl("get", "chatclusters,deployments,serviceaccounts", "-n", namespace,
                           "-o", "name").stdout.strip() in ("", "serviceaccount/default")


def test_server_side_dry_run_refuses_an_invalid_manifest(cluster: Cluster, namespace: str,
                                                         tmp_path: Path) -> None:
    """The dry run above checks something: a broken Deployment is refused, naming the field."""
    path = next(MANIFESTS.glob("*-deployment-*.yaml"))
    doc = load_all(path)[0]
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "root"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", broken, check=False)
    assert proc.returncode != 0
    assert "runAsUser" in proc.stderr, proc.stderr


def can_i(cluster: Cluster, subject: str, verb: str, resource: str, namespace: str) -> bool:
    """``resource`` is TYPE or TYPE/NAME, with ``:SUBRESOURCE`` appended for one."""
    resource, _, subresource = resource.partition(":")
    extra = [f"--subresource={subresource}"] if subresource else []
    proc = cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace,
                           "--as", subject, check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


def test_chart_installs_and_the_operator_gets_only_what_it_needs(cluster: Cluster,
                                                                 namespace: str) -> None:
    """`helm install --wait` into a fresh namespace that enforces the restricted Pod Security
    Standard: the operator's pod is admitted, scheduled, Running and Ready (kwok), and its
    ServiceAccount may do what the operator does and nothing else."""
    cluster.kubectl("label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    release = f"cc-{uuid.uuid4().hex[:6]}"
    cluster.helm("install", release, CHART, "--namespace", namespace, "--wait",
                 "--timeout", "180s")
    try:
        full = f"{release}-chatcluster-operator"
        deployment = json.loads(cluster.kubectl("get", "deployment", full, "-n", namespace,
                                                "-o", "json").stdout)
        assert deployment["status"].get("availableReplicas") == 1
        pods = json.loads(cluster.kubectl(
            "get", "pods", "-n", namespace, "-o", "json",
            "-l", f"app.kubernetes.io/instance={release}").stdout)["items"]
        assert len(pods) == 1
        pod = pods[0]
        assert pod["status"]["phase"] == "Running"
        assert {"type": "Ready", "status": "True"}.items() <= next(
            c for c in pod["status"]["conditions"] if c["type"] == "Ready").items()
        assert pod["spec"]["serviceAccountName"] == full
        assert pod["spec"]["containers"][0]["args"][0] == "operator"
        ensure_crd(cluster)  # helm installed it from crds/, unless it was there already

        sa = f"system:serviceaccount:{namespace}:{full}"
        elsewhere = "default"
        allowed = [
            ("list", "chatclusters.chatcluster.dev", elsewhere),
            ("watch", "chatclusters.chatcluster.dev", elsewhere),
            ("patch", "chatclusters.chatcluster.dev:status", elsewhere),
            ("patch", "deployments.apps", elsewhere),
            ("create", "statefulsets.apps", elsewhere),
            ("delete", "services", elsewhere),
            ("delete", "ingresses.networking.k8s.io", elsewhere),
            ("create", "roles.rbac.authorization.k8s.io", elsewhere),
            ("get", "secrets", elsewhere),
            ("watch", "endpointslices.discovery.k8s.io", elsewhere),
            ("update", f"leases.coordination.k8s.io/{full}", namespace),
            ("create", "leases.coordination.k8s.io", namespace),
        ]
        refused = [
            ("patch", "chatclusters.chatcluster.dev", elsewhere),  # only its status
            ("list", "secrets", elsewhere),  # read by name only
            ("delete", "deployments.apps", elsewhere),  # the garbage collector's job
            ("list", "pods", elsewhere),
            ("list", "nodes", elsewhere),
            ("create", "clusterroles.rbac.authorization.k8s.io", elsewhere),
            ("create", "endpointslices.discovery.k8s.io", elsewhere),
            ("create", "leases.coordination.k8s.io", elsewhere),  # its own namespace only
            ("update", "leases.coordination.k8s.io/another", namespace),  # its own Lease only
            ("create", "pods:exec", elsewhere),
            ("escalate", "roles.rbac.authorization.k8s.io", elsewhere),
        ]
        wrong = [f"{'cannot' if ok else 'can'} {verb} {res} in {ns}"
                 for ok, checks in ((True, allowed), (False, refused))
                 for verb, res, ns in checks
                 if can_i(cluster, sa, verb, res, ns) != ok]
        assert wrong == [], f"the operator's ServiceAccount {sa}: " + "; ".join(wrong)
        # Users with the built-in `edit` role may now create and scale ChatClusters (the
        # chart's aggregated role), users with none may not.
        user = f"user-{release}"
        cluster.kubectl("create", "rolebinding", "edit", "--clusterrole=edit",
                        f"--user={user}", "-n", namespace)
        wait_for(lambda: can_i(cluster, user, "update", "chatclusters.chatcluster.dev:scale",
                               namespace), 30, "the edit role to include ChatClusters")
        assert not can_i(cluster, f"other-{user}", "get", "chatclusters.chatcluster.dev",
                         namespace)
    finally:
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait",
                     "--timeout", "120s", check=False)
    assert cluster.kubectl("get", "clusterrole", full, check=False).returncode != 0, (
        "helm uninstall removes the cluster-scoped RBAC")


def heredocs(markdown: Path) -> list[str]:
    """The bodies of the `<<'EOF'` here-documents in a page's shell blocks."""
    return re.findall(r"<<'EOF'\n(.*?)\nEOF\n", markdown.read_text(), re.DOTALL)


def test_the_chatcluster_of_the_kind_walkthrough_is_accepted(cluster: Cluster, namespace: str
                                                             ) -> None:
    """docs/kubernetes.md step 7 (the example plus an ingress on localhost) passes the CRD's
    validation: a server-side dry run in a fresh namespace."""
    ensure_crd(cluster)
    (manifest,) = [d for d in heredocs(ROOT / "docs" / "kubernetes.md")
                   if "kind: ChatCluster" in d]
    assert yaml.safe_load(manifest)["spec"]["ingress"]["host"] == "localhost"
    proc = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                           input=manifest)
    assert "(server dry run)" in proc.stdout
