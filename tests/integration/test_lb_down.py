"""One dead LB neither stalls nor fools the others (issue 10.5), against the real etcd, nginx and
HAProxy and a real `lbgen watch`: HAProxy killed → nginx's changes still go live within seconds,
and status, metrics and /healthz say HAProxy is down; the nginx master killed while an orphaned
worker keeps serving → never "in sync"; a stats socket left behind → the runtime path gives up at
once and reloads instead."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_haproxy_runtime import StartBackend, StartHaproxy, one_of_two
from tests.integration.test_watcher_e2e import HAPROXY_ADDR, NGINX_ADDR, Node, get, serve_web, shared_etcd  # noqa: F401  (fixture)
from tests.support.etcd import EtcdServer
from tests.support.haproxy_node import node_applier, node_target, web_config
from tests.support.lb import Backend
from tests.support.lbgen_proc import ENV, lbgen_status
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def metered(tmp_path: Path, shared_etcd: EtcdServer, backend: Callable[[str], Backend]) -> Iterator[Node]:  # noqa: F811
    """A Node (nginx + HAProxy + `lbgen watch`) serving `web` from backend `a`, with /metrics and /healthz."""
    node = Node(tmp_path, shared_etcd, "20ms:100ms", metrics=f"127.0.0.1:{free_port()}")
    try:
        yield serve_web(node, backend)
    finally:
        node.close()


def http(node: Node, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{node.metrics}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def lb_status(node: Node) -> dict[str, object]:
    [lb] = lbgen_status(node.etcd.url, node.prefix)["lb_nodes"]
    return lb


def test_a_killed_haproxy_delays_only_itself_and_is_reported_down(
        metered: Node, backend: Callable[[str], Backend]) -> None:
    n = metered
    n.lbs["haproxy"].kill()
    n.lbs["haproxy"].wait(10)
    started = time.monotonic()
    n.put_endpoint("host-a.web.1", backend("b").port)
    wait_until(lambda: get(NGINX_ADDR, n.port) == "b", 20, "nginx to serve b while HAProxy is dead", interval=0.02)
    took = time.monotonic() - started
    print(f"\nnginx served the change {took:.2f} s after the put, with HAProxy dead (issue 10.5 figure)")
    assert took < 10, "generous: before lanes nginx waited 7–30 s behind HAProxy's timeouts"

    def only_haproxy_down() -> bool:
        body = http(n, "/healthz")[1]
        return "haproxy: LB down: haproxy is not running" in body and "nginx" not in body
    wait_until(only_haproxy_down, 20, "/healthz to name HAProxy, and only HAProxy")
    assert http(n, "/healthz")[0] == 503
    metrics = http(n, "/metrics")[1]
    assert 'lbgen_watcher_lb_up{target="haproxy"} 0.0' in metrics and 'lbgen_watcher_lb_up{target="nginx"} 1.0' in metrics
    wait_until(lambda: not lb_status(n)["targets"]["haproxy"]["up"], 20, "the published status to say down")  # type: ignore[index]
    status = lbgen_status(n.etcd.url, n.prefix)
    assert any("haproxy: down: haproxy is not running" in p for p in status["problems"]), status["problems"]

    assert n.watcher is not None
    started = time.monotonic()
    n.watcher.terminate()  # HAProxy's lane may be inside its 2 s probe of the dead socket
    assert n.watcher.wait(20) == 0
    print(f"SIGTERM → lbgen watch exited in {time.monotonic() - started:.2f} s with HAProxy dead")


def test_a_killed_nginx_master_with_an_orphaned_worker_is_never_in_sync(
        metered: Node, backend: Callable[[str], Backend]) -> None:
    n = metered
    master = n.lbs["nginx"]
    master.kill()
    master.wait(10)
    assert get(NGINX_ADDR, n.port) == "a", "the orphaned worker still serves the old config"
    n.put_endpoint("host-a.web.1", backend("b").port)
    wait_until(lambda: get(HAPROXY_ADDR, n.port) == "b", 20, "HAProxy to serve b")
    wait_until(lambda: not lb_status(n)["targets"]["nginx"]["up"], 20, "the published status to say down")  # type: ignore[index]
    status = lbgen_status(n.etcd.url, n.prefix)
    [problem] = [p for p in status["problems"] if "nginx: down:" in p]
    assert f"nginx master {master.pid} from {n.dir}/nginx.pid is gone; 1 orphaned worker(s)" in problem
    assert get(NGINX_ADDR, n.port) == "a", "nothing applied to nginx: its orphan serves the old config"
    assert "in sync" not in "\n".join(_status_text(n))
    code, body = http(n, "/healthz")
    assert code == 503 and "nginx: LB down: nginx is not running" in body


def _status_text(node: Node) -> list[str]:
    """`lbgen status` as text (it must show the LB node as down)."""
    argv = [sys.executable, "-m", "lbgen", "status", "--registry", node.etcd.url, "--prefix", node.prefix]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=ENV)
    lines = result.stdout.splitlines()
    assert any("LB down" in line for line in lines), result.stdout
    return lines


def test_a_stats_socket_left_behind_falls_back_to_a_reload_at_once(
        haproxy_lb: StartHaproxy, backend: StartBackend) -> None:
    lb, one, two, _ = one_of_two(haproxy_lb, backend)
    stats = lb.dir / "stats.sock"
    stats.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:  # bound, never listening: refuses
        stale.bind(str(stats))
    target = node_target(lb.dir, timeout=30.0)
    started = time.monotonic()
    [result] = node_applier().apply([target], {"haproxy": web_config(lb.dir, lb.port, {one.port: 1, two.port: 1})})
    took = time.monotonic() - started
    print(f"\nruntime socket gone → reloaded in {took:.2f} s (target timeout 30 s)")
    assert (result.ok, result.method) == (True, "reload") and "Connection refused" in result.fallback
    assert took < 15, "generous: the 30 s timeout must not be spent on a socket nobody listens on"
