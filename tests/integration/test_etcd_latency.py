"""etcd a little far away (issue 10.7): one-shot commands and the watcher work through 200 ms and
500 ms of added latency (a delaying proxy on loopback), and `--etcd-timeout` bounds a connect to a
peer that never answers with one error line.

Before the fix, gRPC's connect timeout was the 100 ms `min_reconnect_backoff_ms`: every command
failed through the proxy with "connection attempt timed out before receiving SETTINGS frame".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from tests.support.delay_proxy import BlackHole, DelayProxy
from tests.support.etcd import EtcdServer
from tests.support.lbgen_proc import ENV, LbgenProcesses, lbgen_processes  # noqa: F401
from tests.support.util import wait_until

pytestmark = pytest.mark.integration

ENDPOINT = {"address": "127.0.0.1", "port": 18081, "weight": 1, "node": "far", "health": "healthy"}


@pytest.fixture(params=[0.2, 0.5], ids=["200ms", "500ms"])
def far_etcd(request: pytest.FixtureRequest, etcd_server: EtcdServer, etcd_prefix: str) -> Iterator[str]:
    """The session etcd seen through a proxy adding `param` seconds each way; one endpoint stored."""
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd_server.client_port),)))
    try:
        store.put(f"{etcd_prefix}/services/web/spec", b'{"listen": 8080}')
        store.put(f"{etcd_prefix}/services/web/endpoints/far.web.1", json.dumps(ENDPOINT).encode())
    finally:
        store.close()
    with DelayProxy(etcd_server.client_port, request.param) as proxy:
        yield f"etcd://{proxy.address}"


def lbgen(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbgen", *argv], capture_output=True, text=True,
                          timeout=60, env=ENV, cwd=cwd)


def settings(directory: Path) -> Path:
    """One generic target listing every endpoint, checked by `test -s`."""
    (directory / "t.j2").write_text(
        "{% for s in services %}{% for e in s.endpoints %}{{ s.name }} {{ e.address }}:{{ e.port }}\n"
        "{% endfor %}{% endfor %}")
    path = directory / "lbgen.yaml"
    path.write_text("registry: file:/unused\nwait: 50ms:300ms\nguard: off\n"
                    "targets:\n  - {name: out, template: t.j2, dest: out.txt, check: [test, -s, '{staged}']}\n")
    return path


def test_status_and_registry_ls_through_latency(far_etcd: str, etcd_prefix: str) -> None:
    result = lbgen("status", "--json", "--registry", far_etcd, "--prefix", etcd_prefix)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert [s["name"] for s in services] == ["web"]

    result = lbgen("registry", "ls", "--registry", far_etcd, "--prefix", etcd_prefix)
    assert result.returncode == 0, result.stderr
    assert "far.web.1  127.0.0.1:18081" in result.stdout


def test_render_through_latency(far_etcd: str, etcd_prefix: str, tmp_path: Path) -> None:
    result = lbgen("render", "-c", str(settings(tmp_path)), "--registry", far_etcd, "--prefix", etcd_prefix)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "web 127.0.0.1:18081\n"


def test_watcher_through_latency(far_etcd: str, etcd_prefix: str, etcd_server: EtcdServer, tmp_path: Path,
                                 lbgen_processes: LbgenProcesses) -> None:  # noqa: F811
    out = tmp_path / "out.txt"
    watch = lbgen_processes.start("watch", "watch", "-c", str(settings(tmp_path)), "--registry", far_etcd,
                                  "--prefix", etcd_prefix, "--node", "far-lb", "--metrics-addr", "off")
    wait_until(lambda: out.exists() and "18081" in out.read_text(), 60, f"the first render\n{watch.output()}")

    second = {**ENDPOINT, "port": 18082}
    etcd_server.etcdctl("put", f"{etcd_prefix}/services/web/endpoints/far.web.2", json.dumps(second))
    wait_until(lambda: "18082" in out.read_text(), 60, f"the change through the watch\n{watch.output()}")
    assert watch.alive(), watch.output()


@pytest.mark.parametrize("command", [["status"], ["registry", "ls"]], ids=["status", "registry-ls"])
def test_etcd_timeout_bounds_a_connect_to_a_black_hole(command: list[str]) -> None:
    with BlackHole() as hole:
        result = lbgen(*command, "--registry", f"etcd://{hole.address}", "--etcd-timeout", "1")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"Error: etcd {hole.address}: "), result.stderr
    assert "timed out" in lines[0] or "deadline" in lines[0], lines[0]


def test_etcd_timeout_below_the_round_trip_fails_the_connect(etcd_server: EtcdServer) -> None:
    """The connect is bounded by `--etcd-timeout`, not only the call: through 500 ms each way the
    HTTP/2 handshake needs over a second, so 0.5 s cannot be enough, however fast the machine."""
    with DelayProxy(etcd_server.client_port, 0.5) as proxy:
        result = lbgen("status", "--registry", f"etcd://{proxy.address}", "--etcd-timeout", "0.5")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: etcd {proxy.address}: snapshot "), lines[0]
