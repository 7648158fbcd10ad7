"""`lbgen --help` starts like a small tool: it imports no command's heavy dependencies (issue 13).
Checked by the modules a fresh interpreter has loaded, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("grpc", "docker", "jinja2", "prometheus_client", "watchdog", "pyetcd")

PROBE = """
import json, runpy, sys
sys.argv = ["lbgen", *json.loads(sys.argv[1])]
try:
    runpy.run_module("lbgen", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def loaded_after(argv: list[str]) -> set[str]:
    """The top-level packages a fresh `python -m lbgen ARGV` has imported by the time it exits."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                            timeout=120, check=True)
    assert "usage: lbgen" in result.stdout
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], []], ids=["help", "bare"])
def test_top_level_help_imports_no_command_dependency(argv: list[str]) -> None:
    loaded = loaded_after(argv)
    assert "lbgen" in loaded  # the probe did run lbgen
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_a_command_imports_what_it_uses() -> None:
    """The probe sees imports: `lbgen agent --help` does load the agent's Docker and metrics libraries."""
    assert {"docker", "prometheus_client"} <= loaded_after(["agent", "--help"])


def test_render_help_imports_no_etcd_client_docker_metrics_or_file_watching() -> None:
    """A one-shot render from a file registry needs neither gRPC (only an etcd registry opens it) nor
    Docker nor the metrics library nor watchdog (only a watched file registry starts an observer)."""
    loaded = loaded_after(["render", "--help"])
    assert loaded.isdisjoint({"grpc", "pyetcd", "docker", "prometheus_client", "watchdog"}), loaded
