"""`lbgen watch` as a process on the YAML file registry: registry edits and template edits on disk
are both picked up, metrics and /healthz answer, SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.util import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    (tmp_path / "registry.yaml").write_text(
        "services:\n  web:\n    endpoints:\n      a: {address: 127.0.0.1, port: 8001}\n")
    (tmp_path / "t.j2").write_text("{% for s in services %}{{ s.name }}:{{ s.endpoints | length }}{% endfor %}\n")
    (tmp_path / "lbgen.yaml").write_text(
        "registry: file:registry.yaml\nwait: 10ms:50ms\n"
        "targets:\n  - {name: out, template: t.j2, dest: out.txt, check: none}\n")
    port = free_port()
    log = (tmp_path / "watch.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbgen", "watch", "-c", str(tmp_path / "lbgen.yaml"), "--node", "lb-test",
         "--metrics-addr", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        yield tmp_path, port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _maps_jinja(pid: int) -> bool:
    """Whether the process has Jinja loaded (its markupsafe dependency's C module is mapped)."""
    return "markupsafe" in Path(f"/proc/{pid}/maps").read_text()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_registry_and_template_edits_are_rendered(watch: tuple[Path, int, subprocess.Popen[bytes]]) -> None:
    directory, port, proc = watch
    out = directory / "out.txt"
    wait_until(lambda: _read(out) == "web:1", 15, "the first render")
    assert _get(port, "/healthz") == (200, "ok\n")
    assert 'lbgen_watcher_served_endpoints{service="web"} 1.0' in _get(port, "/metrics")[1]

    (directory / "registry.yaml").write_text(
        "services:\n  web:\n    endpoints:\n      a: {address: 127.0.0.1, port: 8001}\n"
        "      b: {address: 127.0.0.1, port: 8002}\n")
    wait_until(lambda: _read(out) == "web:2", 10, "the registry edit rendered")

    (directory / "t.j2").write_text("{% for s in services %}{{ s.name }}={{ s.endpoints | length }}{% endfor %}\n")
    wait_until(lambda: _read(out) == "web=2", 10, "the template edit rendered")

    tasks = Path(f"/proc/{proc.pid}/task").iterdir()
    workers = [pid for task in tasks for pid in (task / "children").read_text().split()]
    assert workers and all(_maps_jinja(int(pid)) for pid in workers)  # it renders: Jinja is there
    assert not _maps_jinja(proc.pid)  # issue 13: the watcher process never imports Jinja

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
