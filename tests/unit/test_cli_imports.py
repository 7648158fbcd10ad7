"""`lbgen --help` starts like a small tool: it imports no command's heavy dependencies (issue 13).
Checked by the modules a fresh interpreter has loaded, not by timing."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lbgen.cli import ONE_SHOT_GC_THRESHOLD, main

HEAVY = ("grpc", "docker", "jinja2", "prometheus_client", "watchdog", "pyetcd")

PROBE = """
import json, runpy, sys
sys.argv = ["lbgen", *json.loads(sys.argv[1])]
try:
    runpy.run_module("lbgen", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(argv: list[str], cwd: Path | None = None) -> tuple[str, set[str]]:
    """What a fresh `python -m lbgen ARGV` printed, and every module it had imported when it exited."""
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                            timeout=120, check=True, cwd=cwd)
    return result.stdout, set(json.loads(result.stderr.strip().splitlines()[-1]))


def loaded_after(argv: list[str]) -> set[str]:
    """The top-level packages a fresh `python -m lbgen ARGV` has imported by the time it exits."""
    stdout, modules = modules_after(argv)
    assert "usage: lbgen" in stdout
    return {name.split(".")[0] for name in modules}


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


def test_a_one_shot_render_of_a_generic_target_imports_no_lb_module_and_no_quarantine(tmp_path: Path) -> None:
    """The nginx and HAProxy adapters load only for a target of their kind (lbgen.adapters.kinds),
    the quarantine search only for a dry run the checker refuses, HAProxy's runtime planner only
    when a change is planned; nor the etcd client, Docker, metrics or file watching."""
    (tmp_path / "t.j2").write_text("{% for s in services %}{{ s.name }}\n{% endfor %}")
    (tmp_path / "registry.yaml").write_text("services:\n  web:\n    spec: {listen: 8080}\n")
    target = {"name": "conf", "kind": "generic", "template": "t.j2", "dest": "out.conf",
              "check": ["test", "-f", "{staged}"]}
    (tmp_path / "lbgen.yaml").write_text(yaml.safe_dump({"registry": "file:registry.yaml", "targets": [target]}))
    stdout, modules = modules_after(["render", "-c", "lbgen.yaml"], cwd=tmp_path)
    assert "conf: applied revision" in stdout and (tmp_path / "out.conf").read_text() == "web\n"
    unused = {"lbgen.adapters.kinds.nginx", "lbgen.adapters.kinds.haproxy", "lbgen.services.quarantine",
              "lbgen.core.quarantine", "lbgen.core.kinds.haproxy.runtime_plan"}
    assert modules.isdisjoint(unused), sorted(modules & unused)
    heavy = {"grpc", "pyetcd", "docker", "prometheus_client", "watchdog", "google", "requests"}
    assert heavy.isdisjoint(name.split(".")[0] for name in modules), sorted(heavy & {m.split(".")[0] for m in modules})


def test_a_real_process_freezes_what_its_command_imported_a_caller_passing_argv_does_not() -> None:
    probe = ("import gc, sys; sys.argv = ['lbgen']; from lbgen.cli import main; main(); "
             "print(gc.get_freeze_count() > 0)")
    frozen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert frozen.stdout.strip().splitlines()[-1] == "True"
    before = gc.get_freeze_count()
    assert main([]) == 0
    assert gc.get_freeze_count() == before


def test_a_one_shot_render_process_collects_its_young_objects_less_often(tmp_path: Path) -> None:
    """A real `lbgen render` raises the young generation's threshold; a caller passing argv is left alone."""
    (tmp_path / "t.j2").write_text("{{ revision }}\n")
    (tmp_path / "registry.yaml").write_text("services: {}\n")
    target = {"name": "conf", "kind": "generic", "template": "t.j2", "dest": "out.conf",
              "check": ["test", "-f", "{staged}"]}
    (tmp_path / "lbgen.yaml").write_text(yaml.safe_dump({"registry": "file:registry.yaml", "targets": [target]}))
    probe = ("import gc, sys; sys.argv = ['lbgen', 'render', '-c', 'lbgen.yaml']; from lbgen.cli import main; "
             "print(main(), gc.get_threshold()[0])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True,
                          cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == f"0 {ONE_SHOT_GC_THRESHOLD}"
    before = gc.get_threshold()
    assert main(["render", "-c", str(tmp_path / "lbgen.yaml")]) == 0
    assert gc.get_threshold() == before
