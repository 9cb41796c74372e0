"""kind-config.yaml and skaffold.yaml: they parse, and everything they point at exists and fits.

Neither kind nor skaffold can run here (no container engine), so this checks what a typo or a
moved file would break: build context and Dockerfile, chart path, the values skaffold sets, the
ingress ports and node label docs/kubernetes.md relies on, and the example's image.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import yaml

from tests.packaging.conftest import CHART, ROOT


def load(path: Path) -> Any:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: one document"
    return docs[0]


def values() -> dict[str, Any]:
    result: dict[str, Any] = load(CHART / "values.yaml")
    return result


def test_kind_config_maps_the_ingress_ports_to_this_machine() -> None:
    config = load(ROOT / "kind-config.yaml")
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = [n for n in config["nodes"] if n["role"] == "control-plane"]
    mapped = {(m["containerPort"], m["hostPort"], m.get("protocol", "TCP"))
              for m in node["extraPortMappings"]}
    assert {(80, 80, "TCP"), (443, 443, "TCP")} <= mapped
    # ingress-nginx's kind deployment selects the node by this label.
    assert node["labels"]["ingress-ready"] == "true"


def test_skaffold_builds_the_dockerfile_and_deploys_the_chart() -> None:
    configs = {c["metadata"]["name"]: c
               for c in yaml.safe_load_all((ROOT / "skaffold.yaml").read_text()) if c}
    for config in configs.values():
        assert config["kind"] == "Config" and config["apiVersion"].startswith("skaffold/v4")
    operator, example = configs["operator"], configs["example"]

    (artifact,) = operator["build"]["artifacts"]
    context = ROOT / artifact["context"]
    assert context.is_dir()
    assert (context / artifact["docker"]["dockerfile"]).is_file()
    assert (context / ".dockerignore").is_file()

    (release,) = operator["deploy"]["helm"]["releases"]
    chart = ROOT / release["chartPath"]
    assert chart == CHART and (chart / "Chart.yaml").is_file()
    # Every value skaffold sets exists in the chart (values.schema.json refuses unknown keys).
    for dotted in release["setValueTemplates"]:
        node: Any = values()
        for key in dotted.split("."):
            assert isinstance(node, dict) and key in node, f"{dotted} is not a chart value"
            node = node[key]
    image = artifact["image"]
    assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
    assert release["setValueTemplates"]["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}"

    # The example comes after the chart (its CRD), with the built image substituted into the
    # ChatCluster (selected by the CRD's kind and group).
    assert example["requires"] == [{"configs": ["operator"]}]
    for raw in example["manifests"]["rawYaml"]:
        assert (ROOT / raw).is_file(), raw
    (allowed,) = example["resourceSelector"]["allow"]
    crd = load(next((CHART / "crds").glob("*.yaml")))
    assert allowed["groupKind"] == f"{crd['spec']['names']['kind']}.{crd['spec']['group']}"


def test_the_example_runs_the_image_the_chart_installs() -> None:
    """docs/kubernetes.md builds and loads one tag; the operator and the example's children
    must both use it."""
    chart = load(CHART / "Chart.yaml")
    tag = f"{values()['image']['repository']}:{chart['appVersion']}"
    example = load(CHART / "examples" / "chatcluster.yaml")
    assert example["spec"]["image"] == tag
    assert f"chatcluster:{chart['appVersion']}" == tag
    assert tag in (ROOT / "docs" / "kubernetes.md").read_text()


def test_the_walkthroughs_websocket_client_is_valid_python() -> None:
    """docs/kubernetes.md step 11 cannot run here (no kind); it must at least compile, and use
    only what the protocol names (docs/protocol.md)."""
    page = (ROOT / "docs" / "kubernetes.md").read_text()
    (client,) = [d for d in re.findall(r"<<'EOF'\n(.*?)\nEOF\n", page, re.DOTALL)
                 if "websockets" in d]
    ast.parse(client)
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    for op in re.findall(r'"op": "([a-z_.]+)"', client):
        assert f"`{op}`" in protocol, op
    assert "/api/v1/admin/apps" in page and "/api/v1/admin/apps" in protocol
