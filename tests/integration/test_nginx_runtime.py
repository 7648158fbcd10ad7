"""Endpoint changes through nginx's Lua balancer, applied by lbgen (issue 12), against a real nginx
with the Lua module: the shipped template with `runtime` on, the applier wired as the CLI does."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from lbgen.adapters.kinds.nginx.runtime import EndpointsApi
from lbgen.core.kinds.nginx import control_socket
from lbgen.core.model import Service
from lbgen.core.settings import Target
from lbgen.services.applier import TargetResult
from tests.support.lb import ConfFor, Lb, nginx_conf
from tests.support.nginx_lua import HeldBackend
from tests.support.nginx_node import (
    first_config, generation, node_applier, node_config, node_target, web_catalog,
)
from tests.support.util import free_port, wait_until
from tests.unit.catalogs import tricky_catalog

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("lua_module")]

StartNginx = Callable[[ConfFor], Lb]
Backends = Callable[[str], HeldBackend]


class Node:
    """A running nginx rendered and applied by lbgen, service `web` on `port`."""

    def __init__(self, nginx_lb: StartNginx, endpoints: dict[int, int], **target: Any) -> None:
        self.applier = node_applier()

        def conf_for(lb_dir: Path, port: int) -> str:
            self.target, self.port = node_target(lb_dir, **target), port
            return first_config(self.target, web_catalog(port, endpoints))

        self.lb = nginx_lb(conf_for)
        wait_until(lambda: Path(control_socket(self.target.vars)).exists(), 10, "the control socket")

    def apply(self, endpoints: dict[int, int], spec: dict[str, object] | None = None,
              extra: tuple[Service, ...] = ()) -> TargetResult:
        catalog = web_catalog(self.port, endpoints, spec, extra)
        [result] = self.applier.apply([self.target], {"nginx": node_config(self.target, catalog)})
        assert result.ok, result
        return result

    def workers(self) -> frozenset[int]:
        return generation(self.target).workers

    def answers(self, count: int) -> Counter[str]:
        """Who answers `count` requests on one keep-alive connection (one worker: exact weights)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            bodies = []
            for _ in range(count):
                conn.request("GET", "/")
                bodies.append(conn.getresponse().read().decode())
            return Counter(bodies)
        finally:
            conn.close()


def test_add_remove_and_weight_changes_go_live_with_the_same_workers(nginx_lb: StartNginx,
                                                                     held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    node = Node(nginx_lb, {a.port: 1})
    workers = wait_until(lambda: len(node.workers()) == 2 and node.workers(), 10, "two workers")
    assert node.answers(4) == {"a": 4}
    for endpoints, expected in [({a.port: 1, b.port: 1}, {"a": 4, "b": 4}),    # add
                                ({b.port: 1}, {"b": 8}),                       # remove
                                ({a.port: 3, b.port: 1}, {"a": 6, "b": 2}),    # weights
                                ({a.port: 1}, {"a": 8})]:                      # remove, weight
        result = node.apply(endpoints)
        assert (result.method, result.fallback) == ("runtime", "")
        assert node.answers(8) == expected
    assert node.workers() == workers
    assert Path(node.target.dest).read_text() == node_config(node.target, web_catalog(node.port, {a.port: 1}))


class Liar:
    """The control API, but its read-back reports one endpoint more than was written."""

    def __init__(self, target: Target) -> None:
        self.api = EndpointsApi(Path(control_socket(target.vars)), 10)

    def write(self, version: str, sets: Any) -> None:
        self.api.write(version, sets)

    def read(self, upstreams: Any = None) -> tuple[str, dict[str, dict[str, Any]]]:
        version, sets = self.api.read(upstreams)
        for value in sets.values():
            value["endpoints"].append({"address": "127.0.0.9", "port": 9, "weight": 1})
        return version, sets


def test_a_read_back_mismatch_falls_back_to_a_reload(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    node = Node(nginx_lb, {a.port: 1})
    node.applier = node_applier(Liar(node.target))
    workers = wait_until(lambda: len(node.workers()) == 2 and node.workers(), 10, "two workers")
    result = node.apply({b.port: 1})
    assert result.method == "reload" and "reads back upstream web" in result.fallback
    assert result.reloaded and node.workers() - workers  # new workers (old ones may still be draining)
    assert node.answers(4) == {"b": 4}


def test_a_structural_change_reloads(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a = held_backend("a")
    node = Node(nginx_lb, {a.port: 1})
    workers = wait_until(lambda: len(node.workers()) == 2 and node.workers(), 10, "two workers")
    result = node.apply({a.port: 1}, spec={"hosts": ["web.test"]})
    assert (result.method, result.reloaded) == ("reload", True)
    assert result.reloaded and node.workers() - workers  # new workers (old ones may still be draining)


def test_an_endpoint_change_needs_no_check_and_anything_else_does(nginx_lb: StartNginx,
                                                                  held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    node = Node(nginx_lb, {a.port: 1}, check=("false",))  # a checker that refuses everything
    assert node.apply({b.port: 1}).method == "runtime"
    assert node.answers(2) == {"b": 2}
    catalog = web_catalog(node.port, {b.port: 1}, {"hosts": ["web.test"]})
    [result] = node.applier.apply([node.target], {"nginx": node_config(node.target, catalog)})
    assert result.step == "check"


def test_a_node_without_the_lua_module_fails_the_check_naming_the_package(tmp_path: Path) -> None:
    variables = {**node_target(tmp_path).vars, "lua_module": str(tmp_path / "ngx_http_lua_module.so")}
    target = node_target(tmp_path, vars=variables)
    error = node_applier().check_text(target, node_config(target, web_catalog(8080, {8081: 1})))
    assert error is not None
    assert str(error) == (f"nginx: nginx module {tmp_path / 'ngx_http_lua_module.so'} is not installed: "
                          "apt-get install libnginx-mod-http-lua")


def nginx_backends(nginx_lb: StartNginx, names: list[str]) -> tuple[dict[str, int], Path]:
    """An nginx answering each name on its own port; it closes a keep-alive connection after 20
    requests, as busy backends do (the LB must retry a request whose cached connection closed)."""
    ports = {name: free_port() for name in names}
    servers = "".join(f"  server {{ listen 127.0.0.1:{p}; return 200 {n}; }}\n" for n, p in ports.items())

    def conf_for(lb_dir: Path, port: int) -> str:
        text = nginx_conf(lb_dir, port, f"  keepalive_requests 20;\n{servers}  server {{ listen 127.0.0.1:{port}; }}")
        return text.replace("access_log off;", f"access_log {lb_dir / 'access.log'};")

    backends = nginx_lb(conf_for)
    return ports, backends.dir / "access.log"


def test_100_endpoint_changes_under_keep_alive_load_fail_no_request(nginx_lb: StartNginx) -> None:
    ports, log = nginx_backends(nginx_lb, ["a", "b", "c"])
    a, b, c = ports["a"], ports["b"], ports["c"]
    sets = [{a: 1, b: 1}, {b: 2}, {b: 1, c: 3}, {c: 1}, {a: 1, c: 1}]
    node = Node(nginx_lb, sets[-1])
    workers = wait_until(lambda: len(node.workers()) == 2 and node.workers(), 10, "two workers")
    wrk = subprocess.Popen(["wrk", "-t", "2", "-c", "32", "-d", "300s", f"http://127.0.0.1:{node.port}/"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = lambda: log.stat().st_size if log.exists() else 0  # noqa: E731
    methods: Counter[str] = Counter()
    try:
        for i in range(100):  # each change lands among requests in flight: some served between two
            before = served()
            wait_until(lambda: served() >= before + 2000, 30, "requests to be served under load")
            methods[node.apply(sets[i % len(sets)]).method] += 1
    finally:
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        output, _ = wrk.communicate(timeout=30)
    assert methods == {"runtime": 100}
    assert node.workers() == workers
    requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    assert requests >= 2000, output
    assert "Socket errors" not in output and "Non-2xx" not in output, output


def test_nginx_accepts_the_runtime_render_of_every_corner(tmp_path: Path) -> None:
    """The tricky catalog (empty, TCP, IPv6, weight 0, shared ports, conflicts) with runtime on:
    the real `nginx -t` loads the Lua module and parses every Lua block (it does not run
    init_by_lua: the tests that start nginx do)."""
    target = node_target(tmp_path)
    assert node_applier().check_text(target, node_config(target, tricky_catalog())) is None


def _connect_as_nobody(path: str) -> subprocess.CompletedProcess[str]:
    """Connect to a unix socket as user nobody (uid 65534): the prompt of any local user."""
    script = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')"
    return subprocess.run(["/usr/bin/python3", "-c", script, path], capture_output=True, text=True, timeout=30,
                          user=65534, group=65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_another_local_user_cannot_reach_the_control_api(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a = held_backend("a")
    node = Node(nginx_lb, {a.port: 1})
    socket_path = control_socket(node.target.vars)
    assert os.stat(socket_path).st_mode & 0o777 == 0o666  # nginx's own mode: the directory protects it
    directory = Path(socket_path).parent
    ancestors = {path: path.stat().st_mode & 0o7777 for path in directory.parents if path != Path("/")}
    try:
        for path, mode in ancestors.items():  # only the socket's own directory may stand in the way
            path.chmod(mode | 0o001)
        refused = _connect_as_nobody(socket_path)
        assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused
        directory.chmod(0o755)  # opened up, the socket answers anyone: the test itself can fail
        assert "connected" in _connect_as_nobody(socket_path).stdout
    finally:
        directory.chmod(0o700)
        for path, mode in ancestors.items():
            path.chmod(mode)


def test_an_opened_up_socket_directory_sends_changes_to_the_reload(nginx_lb: StartNginx,
                                                                   held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    node = Node(nginx_lb, {a.port: 1})
    Path(control_socket(node.target.vars)).parent.chmod(0o755)
    result = node.apply({b.port: 1})
    assert result.method == "reload" and "is open to other users" in result.fallback
    assert node.answers(2) == {"b": 2}


def test_a_dry_run_says_which_path_a_change_would_take(nginx_lb: StartNginx, held_backend: Backends) -> None:
    """`lbgen render --dry-run` (the applier's preview): an endpoint change would go through the
    control API, a structural one would reload; nothing is written either way."""
    a, b = held_backend("a"), held_backend("b")
    node = Node(nginx_lb, {a.port: 1})
    live = Path(node.target.dest).read_text()
    endpoint_change = node_config(node.target, web_catalog(node.port, {b.port: 1}))
    structural = node_config(node.target, web_catalog(node.port, {a.port: 1}, {"hosts": ["web.test"]}))
    [moved] = node.applier.preview([node.target], {"nginx": endpoint_change})
    [restructured] = node.applier.preview([node.target], {"nginx": structural})
    assert (moved.valid, moved.runtime, bool(moved.diff)) == (True, True, True)
    assert (restructured.valid, restructured.runtime) == (True, False)
    assert Path(node.target.dest).read_text() == live and node.answers(2) == {"a": 2}
