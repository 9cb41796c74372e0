"""``chatcluster operator`` is a subcommand with its flags; --help works without a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chatcluster.cli.main import parser


def test_operator_flags_parse() -> None:
    args = parser().parse_args(["operator", "-n", "a", "-n", "b", "--liveness", "8080",
                                "--identity", "me", "--lease-namespace", "ops"])
    assert args.command == "operator"
    assert args.namespace == ["a", "b"]
    assert (args.liveness, args.identity, args.lease_namespace) == (8080, "me", "ops")
    assert args.lease_name == "chatcluster-operator"
    default = parser().parse_args(["operator"])
    assert default.namespace == [] and default.liveness is None


def test_operator_help_runs() -> None:
    exe = Path(sys.executable).parent / "chatcluster"
    out = subprocess.run([str(exe), "operator", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    for flag in ("--namespace", "--all-namespaces", "--liveness", "--identity",
                 "--lease-name", "--resync"):
        assert flag in out
