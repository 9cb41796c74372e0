"""Fixtures of the packaging tests: the Helm binary, and a real control plane to install into.

`eval "$(scripts/k8s-testenv up)"` exports KUBECONFIG, KUBECTL and HELM (docs/k8s-testenv.md).
A test that needs one of them is skipped, saying which, only when it is not set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chatcluster-operator"
MANIFESTS = ROOT / "manifests"
CRD_NAME = "chatclusters.chatcluster.dev"
NO_CLUSTER = 'run eval "$(scripts/k8s-testenv up)" first'


def run(*argv: str | Path, check: bool = True, timeout: float = 180,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, input=input, check=False)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def helm() -> str:
    found = os.environ.get("HELM") or shutil.which("helm")
    if not found:
        pytest.skip(f"no Helm: HELM is not set and helm is not on PATH ({NO_CLUSTER})")
    return found


@dataclass(frozen=True)
class Cluster:
    """The test control plane: kubectl and helm bound to its kubeconfig."""

    kubectl_bin: str
    helm_bin: str
    kubeconfig: str

    def kubectl(self, *args: str | Path, check: bool = True, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args, check=check,
                   timeout=timeout, input=input)

    def helm(self, *args: str | Path, check: bool = True, timeout: float = 240
             ) -> subprocess.CompletedProcess[str]:
        return run(self.helm_bin, "--kubeconfig", self.kubeconfig, *args, check=check,
                   timeout=timeout)


@pytest.fixture(scope="session")
def cluster(helm: str) -> Cluster:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        pytest.skip(f"no control plane: KUBECONFIG is not set ({NO_CLUSTER})")
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        pytest.skip(f"no kubectl: KUBECTL is not set and kubectl is not on PATH ({NO_CLUSTER})")
    return Cluster(kubectl_bin=kubectl, helm_bin=helm, kubeconfig=kubeconfig)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (without waiting: nothing depends on its end)."""
    name = f"ccpkg-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                        check=False)


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.5)


def ensure_crd(cluster: Cluster) -> None:
    """This checkout's ChatCluster CRD installed for real (a dry run of it creates nothing, and
    the example ChatCluster can only be checked against an established CRD), the same way
    tests/operator/e2e applies it. Left in place: other tests and releases share it, as they
    would in a cluster (Helm never deletes a CRD either)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    CHART / "crds" / f"{CRD_NAME}.yaml")
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}",
                    "--timeout=60s")
