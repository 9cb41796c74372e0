"""Opt-in tier: build the image with buildah (scripts/build-image) and run its entry points.

    CHAT_TEST_IMAGES=1 .venv/bin/pytest tests/packaging/test_image_build.py

No Docker engine and no registry here: the base is made from Debian packages with debootstrap,
the build runs with chroot isolation and vfs storage (docs/kubernetes.md). As root, about
2 minutes the first time (debootstrap ≈45 s), about 90 s after that. The containers share
this machine's network and reach only loopback: the gateway of `chatcluster up`, and the
test control plane's API server for the operator (which needs KUBECONFIG, else it skips).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.conftest import CHART, ROOT, Cluster, ensure_crd, run, wait_for
from tests.packaging.test_dockerfiles import ENTRY_POINTS

pytestmark = [
    pytest.mark.skipif(os.environ.get("CHAT_TEST_IMAGES") != "1",
                       reason="image builds are opt-in: set CHAT_TEST_IMAGES=1 (needs root, "
                              "buildah and debootstrap, installed by scripts/build-image)"),
    pytest.mark.timeout(1800),
]


class Image:
    def __init__(self, name: str, storage: str) -> None:
        self.name = name
        self.buildah = ["buildah", "--root", f"{storage}/storage", "--runroot",
                        f"{storage}/run", "--storage-driver", "vfs"]

    def inspect(self) -> dict[str, object]:
        config: dict[str, object] = json.loads(
            run(*self.buildah, "inspect", "--type", "image", self.name).stdout)
        return config

    def command(self, container: str, *argv: str, network_host: bool = False) -> list[str]:
        net = ["--network", "host"] if network_host else []
        return [*self.buildah, "run", "--isolation", "chroot", *net, container, "--", *argv]


@pytest.fixture(scope="module")
def image() -> Image:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("scripts/build-image needs root and apt-get (Debian)")
    proc = run(ROOT / "scripts" / "build-image", timeout=1700)
    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in proc.stdout.splitlines())
    return Image(exports["CHAT_IMAGE"], exports["CHAT_BUILDAH_ROOT"])


@pytest.fixture
def container(image: Image) -> Iterator[str]:
    name = run(*image.buildah, "from", "--quiet", image.name).stdout.strip()
    try:
        yield name
    finally:
        run(*image.buildah, "rm", name, check=False)


def test_image_config_is_non_root_with_the_one_entry_point(image: Image) -> None:
    config = image.inspect()
    docker = config["Docker"]
    assert isinstance(docker, dict)
    cfg = docker["config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["chatcluster"]
    assert cfg["Labels"]["org.opencontainers.image.title"] == "chatcluster"


def test_every_entry_point_starts_in_the_image(image: Image, container: str) -> None:
    assert run(*image.command(container, "id", "-u")).stdout.strip() == "10001"
    assert run(*image.command(container, "chatcluster", "--version")).stdout.startswith(
        "chatcluster ")
    for command in ENTRY_POINTS:
        proc = run(*image.command(container, "chatcluster", command, "--help"))
        assert f"chatcluster {command}" in proc.stdout


def free_ports(count: int) -> int:
    """A port P with P .. P+count-1 all free: `up --port P` takes the gateway's port and the
    ones after it (socket replicas, the consumers' probe)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first: int = s.getsockname()[1]
        if first + count > 65535:
            continue
        held = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no run of free ports found")


def test_the_image_runs_a_whole_cluster(image: Image, container: str, tmp_path: Path) -> None:
    """`chatcluster up` inside the image as its unprivileged user: gateway, socket replicas
    and consumers start, and the gateway answers on loopback."""
    port = free_ports(4)  # gateway, 2 socket replicas, consumers' probe
    with (tmp_path / "up.log").open("w") as log:
        proc = subprocess.Popen(
            image.command(container, "chatcluster", "up", "--json", "--port", str(port),
                          network_host=True),
            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("event") == "ready", (tmp_path / "up.log").read_text()[-3000:]
        assert ready["gateway_url"] == f"http://127.0.0.1:{port}"
        assert len(ready["socket_urls"]) == 2
        for path, body in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                assert json.loads(resp.read()) == body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_images_operator_reconciles_a_chatcluster(image: Image, container: str,
                                                      cluster: Cluster, namespace: str,
                                                      tmp_path: Path) -> None:
    """`chatcluster operator` from the image, as uid 10001, against the test control plane
    (API server on loopback; kubeconfig mounted read-only): the example reaches Ready=True.
    It watches only the test's namespace."""
    ensure_crd(cluster)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(cluster.kubectl("config", "view", "--raw", "--minify",
                                          "--flatten").stdout)
    kubeconfig.chmod(0o644)  # read by the image's user
    argv = image.command(container, "chatcluster", "operator", "--namespace", namespace,
                         "--lease-namespace", namespace, "--identity", "from-image",
                         network_host=True)
    run_at = argv.index("run") + 1
    argv[run_at:run_at] = ["-v", f"{kubeconfig}:/tmp/kubeconfig:ro",
                           "-e", "KUBECONFIG=/tmp/kubeconfig"]
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        example = (CHART / "examples" / "chatcluster.yaml").read_text()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=example)

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            cc = json.loads(cluster.kubectl("get", "chatcluster", "chat", "-n", namespace,
                                            "-o", "json").stdout)
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (cc.get("status") or {}).get("conditions") or [])

        wait_for(ready, 120, "the example ChatCluster Ready=True, reconciled from the image")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
