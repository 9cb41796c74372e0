"""End-to-end fixtures: the real control plane of ``scripts/k8s-testenv up`` (kube-apiserver,
controller manager with its garbage collector, scheduler, kwok as the nodes) and the operator
as a subprocess (``chatcluster operator``), each test in its own namespace.

Network rule: the pods are not real and their 10.x addresses lead nowhere; these tests talk
to the API server on loopback only (kubectl, or the adapter's client).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[3]
CRD = ROOT / "charts/chatcluster-operator/crds/chatclusters.chatcluster.dev.yaml"
EXAMPLE = ROOT / "charts/chatcluster-operator/examples/chatcluster.yaml"
CHATCLUSTER = str(Path(sys.executable).parent / "chatcluster")
T = TypeVar("T")

NO_CLUSTER = ("no KUBECONFIG: run `eval \"$(scripts/k8s-testenv up)\"` first "
              "(scripts/test does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KUBECONFIG"):
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=NO_CLUSTER))


def kubectl_path() -> str:
    return os.environ.get("KUBECTL", "kubectl")


def kubectl(*args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([kubectl_path(), *args], input=input, capture_output=True, check=False,
                          text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


def get(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.2) -> T:
    """Poll until ``check`` returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def condition(cc: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((cc or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            found: dict[str, Any] = c
            return found
    return {}


def socket_urls_in_configmap(namespace: str, name: str = "chat") -> list[str] | None:
    cm = get("configmap", f"{name}-socket-urls", namespace)
    if cm is None:
        return None
    urls: list[str] = json.loads(cm["data"]["socket_urls"])
    return urls


@pytest.fixture(scope="session")
def crd() -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=30s",
            "crd/chatclusters.chatcluster.dev")


@pytest.fixture
def namespace(crd: None) -> Iterator[str]:
    ns = f"op-e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


class OperatorProcess:
    """``chatcluster operator`` watching one namespace, logging at DEBUG to a file."""

    def __init__(self, namespace: str, log_dir: Path, identity: str) -> None:
        self.namespace = namespace
        self.identity = identity
        self.log_path = log_dir / f"operator-{identity}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [CHATCLUSTER, "operator", "--namespace", namespace, "--lease-namespace", namespace,
             "--identity", identity, "--log-level", "DEBUG", "--resync", "30"],
            stdout=self._log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 30.0, *, after: int = 0) -> int:
        """Wait until ``text`` appears in the log after offset ``after``; its offset."""
        def found() -> int | None:
            assert self.proc.poll() is None or text in self.log()[after:], (
                f"operator {self.identity} exited:\n{self.log()[-3000:]}")
            pos = self.log().find(text, after)
            return pos + 1 if pos >= 0 else None
        try:
            return wait_for(found, timeout, f"{text!r} in the log of {self.identity}") - 1
        except AssertionError as exc:
            tail = "\n".join(line for line in self.log().splitlines()
                             if " DEBUG asyncio" not in line)[-4000:]
            raise AssertionError(f"{exc}\n--- log of {self.identity}:\n{tail}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_operator(namespace: str, tmp_path: Path) -> Iterator[Callable[[str],
                                                                        OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(identity: str = "op-a") -> OperatorProcess:
        op = OperatorProcess(namespace, tmp_path, identity)
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def operator(start_operator: Callable[[str], OperatorProcess]) -> OperatorProcess:
    op = start_operator("op-a")
    op.wait_log("acquired leadership")
    return op


def apply_example(namespace: str, replicas: int | None = None) -> None:
    text = EXAMPLE.read_text()
    if replicas is not None:
        text = text.replace("replicas: 2", f"replicas: {replicas}")
    kubectl("-n", namespace, "apply", "-f", "-", input=text)


def wait_ready(namespace: str, name: str = "chat", timeout: float = 30.0) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        cc = get("chatcluster", name, namespace)
        return cc if condition(cc, "Ready").get("status") == "True" else None
    return wait_for(ready, timeout, f"{namespace}/{name} Ready=True")
