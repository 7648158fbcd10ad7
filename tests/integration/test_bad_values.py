"""Deeply nested and huge values under services/, lb/ and drain/ in the real etcd (issue 10 part 2).

Before the bounds, a 2 KB value nested 1,000 deep raised `RecursionError`: `lbgen watch` exited (and
crash-looped on restart), `status`, `registry ls` and `render` printed tracebacks. Now the watcher
keeps running and renders the rest, and each command prints its usual output with one short line
per rejected value.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.core.registry_url import parse_registry_url
from lbgen.ports import Store
from tests.support.etcd import EtcdServer
from tests.support.lbgen_proc import ENV, LbgenProcesses, lbgen_processes  # noqa: F401 (a fixture)
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

WAIT = 30  # generous: two test workers share two busy CPUs
DEEP = b"[" * 1000 + b"]" * 1000
BAD = {
    "services/web/endpoints/deep": DEEP,
    "services/web/endpoints/deep-tags": b'{"address":"127.0.0.1","port":8009,"tags":' + DEEP + b"}",
    "services/web/endpoints/huge": b'{"address":"' + b"a" * 1_000_000 + b'","port":80}',  # etcd takes ~1.5 MiB
    "services/deep/spec": b'{"listen":' + DEEP + b"}",
    "lb/evil": DEEP,
    "lb/huge": b'{"revision":1,"error":"' + b"e" * 1_000_000 + b'"}',
    "drain/web.deep": DEEP,
}
TEMPLATE = "{% for s in services %}{{ s.name }}:{% for e in s.endpoints %}{{ e.port }},{% endfor %};{% endfor %}\n"


@pytest.fixture
def store(etcd_server: EtcdServer, etcd_prefix: str) -> Iterator[Store]:
    """The real etcd holding a good service `web` (one endpoint) and every bad value above."""
    store = EtcdStore(EtcdConfig(endpoints=parse_registry_url(etcd_server.url).endpoints, timeout=30))
    store.put(f"{etcd_prefix}/services/web/spec", b'{"listen":8080}')
    store.put(f"{etcd_prefix}/services/web/endpoints/a", b'{"address":"127.0.0.1","port":8001}')
    for key, value in BAD.items():
        store.put(f"{etcd_prefix}/{key}", value)
    yield store
    store.close()


def settings(directory: Path) -> Path:
    """Settings and template in their own directory: the watcher watches it, and logs go elsewhere."""
    directory.mkdir(exist_ok=True)
    (directory / "t.j2").write_text(TEMPLATE)
    path = directory / "lbgen.yaml"
    path.write_text("registry: file:/unused\nwait: 10ms:100ms\n"
                    "targets:\n  - {name: out, template: t.j2, dest: out.txt, check: [test, -s, '{staged}']}\n")
    return path


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def assert_short_lines(output: str) -> None:
    assert "Traceback" not in output, output[-3000:]
    long = [line[:200] for line in output.splitlines() if len(line) > 600]
    assert not long, long


def test_the_watcher_keeps_running_and_renders_the_rest(
    store: Store, etcd_server: EtcdServer, etcd_prefix: str, lbgen_processes: LbgenProcesses, tmp_path: Path
) -> None:
    port = free_port()
    watch = lbgen_processes.start("watch", "watch", "-c", str(settings(tmp_path / "lb")), "--registry", etcd_server.url,
                                  "--prefix", etcd_prefix, "--node", "lb-bad", "--metrics-addr", f"127.0.0.1:{port}")
    out = tmp_path / "lb" / "out.txt"
    wait_until(lambda: read(out) == "web:8001,;" or not watch.alive(), WAIT, "the first render from the snapshot")
    assert watch.alive(), lbgen_processes.logs()

    store.put(f"{etcd_prefix}/services/web/endpoints/deep2", DEEP)  # through the watch this time
    store.put(f"{etcd_prefix}/lb/evil2", DEEP)
    store.put(f"{etcd_prefix}/services/web/endpoints/b", b'{"address":"127.0.0.1","port":8002}')
    wait_until(lambda: read(out) == "web:8001,8002,;" or not watch.alive(), WAIT, "the good change rendered")
    assert watch.alive(), lbgen_processes.logs()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert "lbgen_watcher_rejected_values 5.0" in response.read().decode()  # 4 from the snapshot, 1 watched
    log = watch.output()
    assert f"{etcd_prefix}/services/web/endpoints/deep2" in log and "nested deeper than 32 levels" in log
    assert f"value of {len(BAD['services/web/endpoints/huge'])} bytes: the limit is 65536" in log
    assert_short_lines(log)
    assert watch.terminate() == 0


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbgen", *argv], capture_output=True, text=True, timeout=60, env=ENV)


@pytest.mark.parametrize("command", ["status", "status --json", "status --check", "registry ls", "registry ls web"])
def test_read_commands_list_bad_values_as_one_line_each(
    store: Store, etcd_server: EtcdServer, etcd_prefix: str, command: str
) -> None:
    result = run(*command.split(), "--registry", etcd_server.url, "--prefix", etcd_prefix)
    assert result.returncode == (1 if "--check" in command else 0), result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert_short_lines(output)
    assert "services/web/endpoints/deep" in output
    if "--json" in command:
        document = json.loads(result.stdout)
        assert [e["id"] for s in document["services"] for e in s["endpoints"]] == ["a"]
        assert {lb["node"]: lb["invalid"] for lb in document["lb_nodes"]} == {
            "evil": "nested deeper than 32 levels", "huge": f"value of {len(BAD['lb/huge'])} bytes: the limit is 65536"}


def test_render_renders_the_rest(store: Store, etcd_server: EtcdServer, etcd_prefix: str, tmp_path: Path) -> None:
    result = run("render", "-c", str(settings(tmp_path / "lb")), "--registry", etcd_server.url, "--prefix", etcd_prefix)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read(tmp_path / "lb" / "out.txt") == "web:8001,;"
    assert_short_lines(result.stdout + result.stderr)
    assert "services/web/endpoints/huge at revision" in result.stderr
