"""`lbgen watch` as a real process against templates that never end, signals and leftovers (issue 10):
a template that loops forever is refused in one line while the last good config stays live (a
real nginx keeps serving it) and `/healthz` says why; SIGTERM ends it within the deadline even mid-render; SIGHUP re-reads the
settings and templates, and a broken settings file keeps the running ones; stale staged files of
its own targets are removed at start; one-shot `lbgen render` is bounded too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.support.etcd import EtcdServer
from tests.support.lb import Backend, ConfFor, Lb, get, nginx_conf, nginx_proxy, serves
from tests.support.lbgen_proc import ENV, LbgenProcess, LbgenProcesses, lbgen_processes  # noqa: F401
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

GOOD = "good: {% for s in services %}{{ s.name }} {% endfor %}{{ vars.word }}\n"
# The inner body reads `a`, so the fragment cache (issue 13) cannot reuse it: 10^10 real iterations.
LOOP = "{% for a in range(100000) %}{% for b in range(100000) %}{% if a < b < 0 %}{% endif %}{% endfor %}{% endfor %}"
SIGTERM_DEADLINE = 5.0  # generous for a loaded machine; the measured figure is printed


def settings(directory: Path, registry: str, **target: Any) -> Path:
    base = {"name": "out", "template": "t.j2", "dest": "out.txt", "check": "none", "vars": {"word": "one"},
            "render_timeout": "1s"}
    path = directory / "lbgen.yaml"
    path.write_text(yaml.safe_dump({"registry": registry, "wait": "10ms:50ms", "guard": "off",
                                    "targets": [{**base, **target}]}))
    return path


def start(processes: LbgenProcesses, directory: Path, *registry: str) -> tuple[LbgenProcess, int]:
    port = free_port()
    proc = processes.start("watch", "watch", "-c", str(directory / "lbgen.yaml"), "--node", "lb-test",
                           "--metrics-addr", f"127.0.0.1:{port}", *registry)
    return proc, port


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def children(pid: int) -> list[int]:
    """The processes `pid` forked that still run: its render worker, forked again for the render
    after the one that `render_timeout` killed (so here: a render in progress)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sigterm_exit_time(proc: LbgenProcess) -> float:
    """Seconds from SIGTERM to the process's exit (exit code 0 asserted)."""
    start = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    code = proc.proc.wait(timeout=30)
    elapsed = time.monotonic() - start
    assert code == 0, proc.output()[-2000:]
    return elapsed


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    (tmp_path / "registry.yaml").write_text(
        "services:\n  web:\n    endpoints:\n      a: {address: 127.0.0.1, port: 8001}\n")
    (tmp_path / "t.j2").write_text(GOOD)
    return tmp_path


@pytest.mark.parametrize("backend", ["file", "etcd"])
def test_a_template_that_never_ends_is_refused_and_sigterm_still_ends_the_watcher(
        directory: Path, lbgen_processes: LbgenProcesses, backend: str,  # noqa: F811
        request: pytest.FixtureRequest) -> None:
    registry: tuple[str, ...] = ()
    expected = "good: web one\n"
    if backend == "etcd":  # the watcher then has gRPC threads when it forks
        server: EtcdServer = request.getfixturevalue("etcd_server")
        registry = ("--registry", server.url, "--prefix", request.getfixturevalue("etcd_prefix"))
        expected = "good: one\n"
    settings(directory, "file:registry.yaml")
    proc, port = start(lbgen_processes, directory, *registry)
    out = directory / "out.txt"
    wait_until(lambda: read(out) == expected, 30, "the first render")

    (directory / "t.j2").write_text(LOOP)
    refused = "t.j2: render stopped after render_timeout (1s)"
    wait_until(lambda: refused in proc.output(), 30, "the render refused")
    status, body = wait_until(lambda: (r := healthz(port))[0] == 503 and r, 10, "/healthz to report it")
    assert f"out: {directory / 't.j2'}: render stopped after render_timeout (1s)" in body
    assert proc.alive() and read(out) == expected  # the last good config stays live
    errors = [line for line in proc.output().splitlines() if refused in line]
    assert errors and all("ERROR" in line and "revision" in line for line in errors)
    assert "Traceback" not in proc.output()

    settings(directory, "file:registry.yaml", render_timeout="60s")  # now a render lasts long enough to interrupt
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: children(proc.proc.pid), 30, "a render in progress")
    elapsed = sigterm_exit_time(proc)
    print(f"\nSIGTERM mid-render ({backend} registry): exited after {elapsed:.2f} s")
    assert elapsed < SIGTERM_DEADLINE
    assert read(out) == expected


def test_sighup_rereads_settings_and_templates_and_keeps_them_when_broken(
        directory: Path, lbgen_processes: LbgenProcesses) -> None:  # noqa: F811
    path = settings(directory, "file:registry.yaml")
    proc, port = start(lbgen_processes, directory)
    out = directory / "out.txt"
    wait_until(lambda: read(out) == "good: web one\n", 30, "the first render")

    settings(directory, "file:registry.yaml", vars={"word": "two"}, dest="other.txt")
    proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: read(directory / "other.txt") == "good: web two\n", 15, "the reloaded settings applied")

    path.write_text(path.read_text().replace("render_timeout", "render_timeuot"))
    proc.proc.send_signal(signal.SIGHUP)
    line = "reload: keeping the running settings: "
    wait_until(lambda: line in proc.output(), 15, "the broken file refused")
    assert [x for x in proc.output().splitlines() if line in x][0].endswith(
        "targets[0].render_timeuot: unknown setting (did you mean 'render_timeout'?)")
    (directory / "registry.yaml").write_text(
        "services:\n  api:\n    endpoints:\n      a: {address: 127.0.0.1, port: 8001}\n")
    wait_until(lambda: read(directory / "other.txt") == "good: api two\n", 15, "a registry edit, on the running settings")
    assert proc.alive() and healthz(port)[0] == 200
    assert sigterm_exit_time(proc) < SIGTERM_DEADLINE


def test_stale_staged_files_of_its_own_targets_are_removed_at_start(
        directory: Path, lbgen_processes: LbgenProcesses) -> None:  # noqa: F811
    settings(directory, "file:registry.yaml")
    stale = directory / ".out.txt.k3j_9x2q.lbgen"  # a watcher killed between stage and commit
    stale.write_text("half-applied")
    others = [directory / ".other.txt.k3j_9x2q.lbgen", directory / ".out.txt.k3j_9x2q.lbgen.orig", directory / "notes.lbgen"]
    for path in others:
        path.write_text("not a staged file of this watcher's targets")
    proc, _ = start(lbgen_processes, directory)
    wait_until(lambda: read(directory / "out.txt") == "good: web one\n", 30, "the first render")
    assert not stale.exists() and all(p.exists() for p in others)
    assert f"out: removed stale staged file {stale}" in proc.output()
    os.kill(proc.proc.pid, signal.SIGTERM)
    assert proc.proc.wait(timeout=30) == 0


def test_real_nginx_keeps_its_last_good_config_through_a_template_that_never_ends(
        tmp_path: Path, lbgen_processes: LbgenProcesses,  # noqa: F811
        nginx_lb: Callable[[ConfFor], Lb], backend: Callable[[str], Backend]) -> None:
    alpha, beta = backend("alpha"), backend("beta")
    lb = nginx_lb(lambda lb_dir, port: nginx_proxy(lb_dir, port, alpha.port))
    upstream = ("  upstream web { {% for s in services %}{% for e in s.endpoints %}server {{ e | hostport }}; "
                "{% endfor %}{% endfor %} }\n"
                f"  server {{ listen 127.0.0.1:{lb.port}; location / {{ proxy_pass http://web; }} }}")
    (tmp_path / "t.j2").write_text(nginx_conf(lb.dir, lb.port, upstream))
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"services:\n  web:\n    endpoints:\n      a: {{address: 127.0.0.1, port: {beta.port}}}\n")
    (tmp_path / "lbgen.yaml").write_text(yaml.safe_dump({
        "registry": "file:registry.yaml", "wait": "10ms:50ms", "guard": "off",
        "targets": [{"name": "nginx", "kind": "nginx", "template": "t.j2", "dest": str(lb.conf),
                     "check": ["nginx", "-t", "-q", "-c", "{staged}"], "timeout": "10s", "render_timeout": "2s",
                     "vars": {"pid": str(lb.pid_file)}}]}))
    proc, port = start(lbgen_processes, tmp_path)
    serves(lb.port, "beta", timeout=30)  # the watcher's first config is live

    (tmp_path / "t.j2").write_text(LOOP)
    wait_until(lambda: "render stopped after render_timeout (2s)" in proc.output(), 30, "the render refused")
    registry.write_text(f"services:\n  web:\n    endpoints:\n      a: {{address: 127.0.0.1, port: {alpha.port}}}\n")
    wait_until(lambda: healthz(port)[0] == 503, 10, "/healthz to report the template")
    assert proc.alive() and get(lb.port) == "beta"  # nothing was applied: the last good config serves
    assert lb.process.poll() is None

    wait_until(lambda: children(proc.proc.pid), 30, "a render in progress")
    elapsed = sigterm_exit_time(proc)
    print(f"\nSIGTERM mid-render (nginx target): exited after {elapsed:.2f} s")
    assert elapsed < SIGTERM_DEADLINE
    assert get(lb.port) == "beta" and lb.process.poll() is None


def test_one_shot_render_refuses_a_template_that_never_ends(directory: Path) -> None:
    settings(directory, "file:registry.yaml")
    (directory / "t.j2").write_text(LOOP)
    result = subprocess.run([sys.executable, "-m", "lbgen", "render", "-c", str(directory / "lbgen.yaml")],
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode != 0
    assert f"out: render failed: {directory / 't.j2'}: render stopped after render_timeout (1s)" in result.stderr
    assert "Traceback" not in result.stderr and not (directory / "out.txt").exists()
