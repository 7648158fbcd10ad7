"""`lbgen`'s shared options as a new user types them, run for real: a bare `lbgen` prints help,
and `lbgen watch --log-level DEBUG --log-format json` (options after the command, any case)
writes only JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.lbgen_proc import ENV, ROOT
from tests.support.util import wait_until

pytestmark = pytest.mark.integration


def test_bare_lbgen_prints_help() -> None:
    result = subprocess.run([sys.executable, "-m", "lbgen"], capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: lbgen") and "watch" in result.stdout and result.stderr == ""


def test_watch_logs_json_lines_with_options_after_the_command(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text("services:\n  web:\n    endpoints:\n      a: {address: 127.0.0.1, port: 8001}\n")
    (tmp_path / "t.j2").write_text("{% for s in services %}{{ s.name }}{% endfor %}\n")
    (tmp_path / "lbgen.yaml").write_text("registry: file:registry.yaml\nwait: 10ms:50ms\n"
                                         "targets:\n  - {name: out, template: t.j2, dest: out.txt, check: none}\n")
    log = tmp_path / "watch.log"
    argv = [sys.executable, "-m", "lbgen", "watch", "-c", str(tmp_path / "lbgen.yaml"), "--node", "lb-json",
            "--metrics-addr", "off", "--log-level", "DEBUG", "--log-format", "json"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path)
    try:
        wait_until(lambda: (tmp_path / "out.txt").exists(), 30, f"the first render\n{log.read_text()}")
    finally:
        proc.terminate()
        proc.wait(20)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["level"] for e in entries} >= {"debug", "info"}, entries
    assert any(e["logger"].startswith("lbgen.") and "watching" in e["message"] for e in entries), entries


def test_deploy_check_validates_a_spec_without_docker(tmp_path: Path) -> None:
    env = {**ENV, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    run = lambda spec: subprocess.run([sys.executable, "-m", "lbgen", "deploy", "check", str(spec)],  # noqa: E731
                                      capture_output=True, text=True, timeout=30, env=env)
    result = run(ROOT / "examples" / "deploy.yaml")
    assert result.returncode == 0, result.stderr
    assert "3 to create" in result.stdout and "valid: project demo, 1 service(s), 3 replica(s)" in result.stdout

    typo = tmp_path / "typo.yaml"
    typo.write_text("services:\n  web:\n    imgae: lbgen-demo:1\n    port: 18081\n")
    result = run(typo)
    assert result.returncode == 2
    assert result.stderr == f"Error: {typo}: services.web.imgae: unknown setting (did you mean 'image'?)\n"
