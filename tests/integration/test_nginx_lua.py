"""nginx's Lua balancer against a real nginx with the Lua module (issue 12): the data plane alone.

The config comes from `tests.support.nginx_lua.lua_conf` around lbgen's endpoint block; endpoint
sets change through the control socket; backends are HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import collections
import http.client
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from lbgen.core.kinds.nginx.endpoints import endpoint_set
from lbgen.errors import ApplyError
from tests.support.lb import ConfFor, Lb
from tests.support.nginx_lua import HeldBackend, control, lua_conf, service, worker_pids
from tests.support.util import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("lua_module")]

StartNginx = Callable[[ConfFor], Lb]
Backends = Callable[[str], HeldBackend]


def fetch(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, str]:
    """(status, body) of GET `path`, on `conn` (keep-alive) or a new connection."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        response = c.getresponse()
        return response.status, response.read().decode()
    finally:
        if conn is None:
            c.close()


def answers(port: int, path: str, count: int) -> collections.Counter[str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        return collections.Counter(fetch(port, path, conn)[1] for _ in range(count))
    finally:
        conn.close()


def start(nginx_lb: StartNginx, services: list[Any], workers: int = 1) -> Lb:
    return nginx_lb(lambda lb_dir, port: lua_conf(lb_dir, port, services, workers))


def put(lb: Lb, *services: Any, version: str = "v2") -> None:
    control(lb.dir).write(version, {s.name: endpoint_set(s) for s in services})


def test_smooth_weighted_round_robin_follows_the_weights(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a, b, c = held_backend("a"), held_backend("b"), held_backend("c")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1), ("127.0.0.1", b.port, 2), ("127.0.0.1", c.port, 3))])
    assert answers(lb.port, "/web/", 60) == {"a": 10, "b": 20, "c": 30}


def test_a_set_through_the_api_is_served_by_the_same_workers(nginx_lb: StartNginx, held_backend: Backends) -> None:
    old, new = held_backend("old"), held_backend("new")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", old.port, 1))], workers=2)
    pids = wait_until(lambda: len(worker_pids(lb.process.pid)) == 2 and worker_pids(lb.process.pid), 10, "2 workers")
    assert set(answers(lb.port, "/web/", 4)) == {"old"}
    put(lb, service("web", ("127.0.0.1", new.port, 1)), version="v7")
    # each worker rebuilds from the shared dict: a new connection per request reaches both workers
    assert {fetch(lb.port, "/web/")[1] for _ in range(20)} == {"new"}
    assert worker_pids(lb.process.pid) == pids
    version, sets = control(lb.dir).read(["web"])
    assert version == "v7" and sets["web"]["endpoints"] == [{"address": "127.0.0.1", "port": new.port, "weight": 1}]


def test_a_removed_endpoints_request_in_flight_completes(nginx_lb: StartNginx, held_backend: Backends) -> None:
    leaving, staying = held_backend("leaving"), held_backend("staying")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", leaving.port, 1))])
    result: list[tuple[int, str]] = []
    request = threading.Thread(target=lambda: result.append(fetch(lb.port, "/web/hold")), name="in-flight")
    request.start()
    assert leaving.arrived.wait(10), "the held request never reached its backend"
    put(lb, service("web", ("127.0.0.1", staying.port, 1)))
    assert set(answers(lb.port, "/web/", 5)) == {"staying"}
    leaving.release.set()
    request.join(10)
    assert result == [(200, "leaving")]


def test_a_connect_error_goes_to_the_next_endpoint_and_marks_the_failed_one(
    nginx_lb: StartNginx, held_backend: Backends
) -> None:
    live = held_backend("live")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", 1, 1), ("127.0.0.1", live.port, 1))])
    assert answers(lb.port, "/web/", 20) == {"live": 20}
    # max_fails=1, fail_timeout=60: after its first refusal the dead endpoint is not tried again
    assert lb.log().count("connect() failed") == 1


def test_an_upstream_without_endpoints_answers_503(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a = held_backend("a")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1)), service("empty")])
    assert fetch(lb.port, "/empty/")[0] == 503
    put(lb, service("web"))
    assert fetch(lb.port, "/web/")[0] == 503
    assert a.requests == 0


def test_weight_zero_gets_no_new_requests(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1), ("127.0.0.1", b.port, 1))])
    put(lb, service("web", ("127.0.0.1", a.port, 0), ("127.0.0.1", b.port, 1)))
    assert answers(lb.port, "/web/", 10) == {"b": 10}


def test_leastconn_avoids_the_busy_endpoint(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1), ("127.0.0.1", b.port, 1), balance="leastconn")])
    held: list[tuple[int, str]] = []
    request = threading.Thread(target=lambda: held.append(fetch(lb.port, "/web/hold")), name="busy")
    request.start()
    busy, idle = wait_until(lambda: (a, b) if a.arrived.is_set() else (b, a) if b.arrived.is_set() else None,
                            10, "the held request to arrive")
    assert answers(lb.port, "/web/", 6) == {idle.name: 6}
    busy.release.set()
    request.join(10)
    assert held == [(200, busy.name)]


def test_source_sends_a_client_to_one_endpoint_and_random_spreads(nginx_lb: StartNginx,
                                                                  held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    eps = (("127.0.0.1", a.port, 1), ("127.0.0.1", b.port, 1))
    lb = start(nginx_lb, [service("web", *eps, balance="source"), service("rnd", *eps, balance="random")])
    assert len(answers(lb.port, "/web/", 20)) == 1
    assert set(answers(lb.port, "/rnd/", 200)) == {"a", "b"}  # one-sided: 2 * 0.5**200


def test_the_control_api_is_unreachable_from_the_public_listener(nginx_lb: StartNginx,
                                                                 held_backend: Backends) -> None:
    a = held_backend("a")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1))])
    for path in ("/endpoints", "/endpoints?upstream=web", "/web/../endpoints"):
        assert fetch(lb.port, path) == (404, "public\n")
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    conn.request("PUT", "/endpoints", body=b'{"version":"x","upstreams":{"web":{"balance":"random","endpoints":[]}}}',
                 headers={"Host": "localhost"})
    assert conn.getresponse().status == 404
    conn.close()
    assert control(lb.dir).read()[1]["web"]["balance"] == "roundrobin"


@pytest.mark.parametrize("body, error", [
    ({"version": "v2", "upstreams": {"nope": {"balance": "random", "endpoints": []}}}, "404: no upstream nope"),
    ({"version": "v2", "upstreams": {"web": {"balance": "hash", "endpoints": []}}}, "400: web: balance"),
    ({"version": "v2", "upstreams": {"web": {"balance": "random",
                                             "endpoints": [{"address": "backend.internal", "port": 1}]}}},
     "400: web: endpoint 1: address"),
    ({"version": "v2", "upstreams": {"web": {"balance": "random",
                                             "endpoints": [{"address": "127.0.0.1", "port": 70000}]}}},
     "400: web: endpoint 1: port"),
    ({"version": "v 2", "upstreams": {}}, "400: version"),
], ids=["unknown-upstream", "balance", "host-name", "port", "version"])
def test_the_api_refuses_invalid_sets_and_changes_nothing(nginx_lb: StartNginx, held_backend: Backends,
                                                          body: dict[str, Any], error: str) -> None:
    a = held_backend("a")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1))])
    before = control(lb.dir).read()
    with pytest.raises(ApplyError, match=error):
        control(lb.dir).write(body["version"], body["upstreams"])
    assert control(lb.dir).read() == before


def test_a_reload_brings_back_the_sets_of_the_file(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a, b = held_backend("a"), held_backend("b")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1))])
    version = control(lb.dir).read()[0]
    put(lb, service("web", ("127.0.0.1", b.port, 1)))
    lb.conf.write_text(lua_conf(lb.dir, lb.port, [service("web", ("127.0.0.1", a.port, 1))], 1))
    pids = worker_pids(lb.process.pid)
    lb.process.send_signal(1)  # SIGHUP: the file is what runs
    wait_until(lambda: worker_pids(lb.process.pid).isdisjoint(pids) and worker_pids(lb.process.pid), 10, "new workers")
    assert control(lb.dir).read()[0] == version
    assert set(answers(lb.port, "/web/", 4)) == {"a"}


def test_an_upstream_split_over_many_lines_is_loaded_whole(nginx_lb: StartNginx, held_backend: Backends) -> None:
    a = held_backend("a")
    lb = start(nginx_lb, [service("web", ("127.0.0.1", a.port, 1), *MANY)])
    assert len(control(lb.dir).read()[1]["web"]["endpoints"]) == 301


MANY = [("fd00::" + format(i, "x"), 9000 + i, 1) for i in range(300)]


def test_the_block_runs_in_functions_of_a_few_lines_each(nginx_lb: StartNginx, held_backend: Backends) -> None:
    """LuaJIT refuses a function of more than 65,536 constants: the block is cut into functions."""
    a = held_backend("a")
    services = [service(f"s{i}", ("127.0.0.1", a.port, 1)) for i in range(7)]
    lb = nginx_lb(lambda lb_dir, port: lua_conf(lb_dir, port, services, per_function=2))
    assert set(control(lb.dir).read()[1]) == {f"s{i}" for i in range(7)}
    assert fetch(lb.port, "/s6/") == (200, "a")


def test_nginx_reads_every_line_wherever_its_config_buffer_ends(tmp_path: Path) -> None:
    """nginx's Lua parser finds a long string's end only within what its 4 KB buffer holds (it
    refills at half): lines of the longest size, shifted across the buffer's edge, all parse."""
    conf = lua_conf(tmp_path, 1, [service("web", *MANY), service("api", *MANY)])
    for pad in range(0, 4096, 61):
        (tmp_path / "nginx.conf").write_text(f"# {'p' * pad}\n{conf}")
        check = subprocess.run(["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"shifted by {pad} bytes: {check.stderr[-300:]}"
