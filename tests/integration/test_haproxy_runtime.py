"""Endpoint changes through HAProxy's Runtime API against a real HAProxy (issue 7): configs rendered
by the real template, applied by the real applier; no new worker unless the structure changed or
the runtime state cannot be trusted."""

from __future__ import annotations

import threading
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lbgen.adapters.kinds.haproxy.control import cli_query
from lbgen.core.values import Generation
from lbgen.ports import Clock
from lbgen.services.applier import Applier, TargetResult
from tests.support.haproxy_node import (
    generation,
    node_applier,
    node_target,
    servers,
    stats_command,
    web_config,
)
from tests.support.lb import Backend, ConfFor, Lb, get, serves

pytestmark = pytest.mark.integration

StartHaproxy = Callable[[ConfFor], Lb]
StartBackend = Callable[[str], Backend]


def start(haproxy_lb: StartHaproxy, endpoints: Mapping[int, int]) -> Lb:
    return haproxy_lb(lambda lb_dir, port: web_config(lb_dir, port, endpoints))


def apply(applier: Applier, lb: Lb, endpoints: Mapping[int, int]) -> TargetResult:
    [result] = applier.apply([node_target(lb.dir)], {"haproxy": web_config(lb.dir, lb.port, endpoints)})
    assert result.ok, result.error
    assert lb.conf.read_text() == web_config(lb.dir, lb.port, endpoints), "the file must match the live state"
    return result


def one_of_two(haproxy_lb: StartHaproxy, backend: StartBackend) -> tuple[Lb, Backend, Backend, Generation]:
    """Backends `one` and `two`; HAProxy started serving `one` only; its generation."""
    one, two = backend("one"), backend("two")
    lb = start(haproxy_lb, {one.port: 1})
    return lb, one, two, generation(lb.dir)


def answers(lb: Lb, n: int) -> Counter[str]:
    return Counter(get(lb.port) for _ in range(n))


def test_add_weight_and_remove_go_through_the_runtime_api_without_a_new_worker(
    haproxy_lb: StartHaproxy, backend: StartBackend
) -> None:
    lb, one, two, before = one_of_two(haproxy_lb, backend)
    applier = node_applier()

    assert apply(applier, lb, {one.port: 1, two.port: 1}).method == "runtime"
    serves(lb.port, "two", timeout=1.0)
    assert apply(applier, lb, {one.port: 3, two.port: 1}).method == "runtime"
    assert {s.port: s.weight for s in servers(lb.dir).values() if not s.admin & 1} == {one.port: 3, two.port: 1}
    assert 25 <= answers(lb, 40)["one"] <= 35, "weights 3:1 over 40 requests"
    assert apply(applier, lb, {two.port: 1}).method == "runtime"
    assert answers(lb, 20) == {"two": 20}, "one's slot is in maintenance (or serves two now)"
    assert generation(lb.dir) == before, "same master, same workers, no reload"


def test_health_checked_slots_follow_registry_health_through_the_runtime_api(
    haproxy_lb: StartHaproxy, backend: StartBackend
) -> None:
    one, two = backend("one"), backend("two")
    checked = {"health_check": "/"}
    lb = haproxy_lb(lambda lb_dir, port: web_config(lb_dir, port, {one.port: 1}, spec=checked))
    applier, before = node_applier(), generation(lb.dir)

    def change(unhealthy: tuple[int, ...]) -> TargetResult:
        text = web_config(lb.dir, lb.port, {one.port: 1, two.port: 1}, unhealthy, spec=checked)
        [result] = applier.apply([node_target(lb.dir)], {"haproxy": text})
        assert result.ok and lb.conf.read_text() == text, result.error
        return result

    assert " check" in lb.conf.read_text()
    assert change(unhealthy=(two.port,)).method == "runtime"  # registered, not served: disabled in place
    assert answers(lb, 10) == {"one": 10}
    assert change(unhealthy=()).method == "runtime"
    serves(lb.port, "two", timeout=5.0)  # leaving maintenance, a checked server starts up and is checked
    assert change(unhealthy=(one.port,)).method == "runtime"
    assert answers(lb, 10) == {"two": 10}
    assert generation(lb.dir) == before


class _Slow(BaseHTTPRequestHandler):
    """Answers `slow` after `release` is set: a request that is still open when its endpoint leaves."""

    def do_GET(self) -> None:
        self.server.arrived.set()  # type: ignore[attr-defined]
        self.server.release.wait(10)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"slow")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def slow_backend() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.arrived, server.release = threading.Event(), threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(0.05,), name="slow-backend", daemon=True).start()
    yield server
    server.release.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_a_leaving_endpoint_finishes_its_open_requests(
    haproxy_lb: StartHaproxy, backend: StartBackend, slow_backend: ThreadingHTTPServer
) -> None:
    fast, slow = backend("fast").port, slow_backend.server_address[1]
    both = {slow: 1, fast: 1}  # the same slots throughout: only their states change
    lb = haproxy_lb(lambda lb_dir, port: web_config(lb_dir, port, both, unhealthy=(fast,)))
    answered: list[str] = []
    client = threading.Thread(target=lambda: answered.append(get(lb.port, timeout=10)), daemon=True)
    client.start()
    assert slow_backend.arrived.wait(5), "the request reached the slow endpoint"  # type: ignore[attr-defined]
    [result] = node_applier().apply([node_target(lb.dir)], {"haproxy": web_config(lb.dir, lb.port, both, (slow,))})
    assert (result.ok, result.method) == (True, "runtime"), result.error
    assert [s.admin & 1 for s in servers(lb.dir).values() if s.port == slow] == [1], "slow is in maintenance"
    serves(lb.port, "fast", timeout=1.0)
    slow_backend.release.set()  # type: ignore[attr-defined]
    client.join(5)
    assert answered == ["slow"]


def test_running_out_of_slots_reloads(haproxy_lb: StartHaproxy, backend: StartBackend) -> None:
    backends = [backend(f"b{i}") for i in range(5)]
    lb = start(haproxy_lb, {b.port: 1 for b in backends[:4]})  # min_slots 4: every slot taken
    applier, before = node_applier(), generation(lb.dir)
    result = apply(applier, lb, {b.port: 1 for b in backends})
    assert (result.method, result.reloaded, result.fallback) == ("reload", True, "")
    after = generation(lb.dir)
    assert after.workers - before.workers and after.reloads == before.reloads + 1
    assert len(servers(lb.dir)) == 8
    serves(lb.port, "b4", timeout=2.0)


def test_a_state_changed_behind_lbgens_back_is_caught_by_the_read_back_and_reloaded(
    haproxy_lb: StartHaproxy, backend: StartBackend
) -> None:
    lb, one, two, before = one_of_two(haproxy_lb, backend)
    applier = node_applier()
    assert stats_command(lb.dir, "set weight web/slot1 7").strip() == ""
    result = apply(applier, lb, {one.port: 1, two.port: 1})
    assert (result.method, result.reloaded) == ("reload", True)
    assert "web/slot1: expected" in result.fallback
    assert generation(lb.dir).workers - before.workers, "the fallback reload started a new worker"
    assert servers(lb.dir)["slot1"].weight == 1, "the reload brought back the rendered state"


def test_a_read_back_the_adapter_cannot_trust_falls_back_to_a_reload(
    haproxy_lb: StartHaproxy, backend: StartBackend
) -> None:
    lb, one, two, _ = one_of_two(haproxy_lb, backend)

    def lying(path: Path, command: str, clock: Clock, deadline: float) -> str:
        answer = cli_query(path, command, clock, deadline)
        return answer.replace(" slot2 ", " slot9 ") if command.startswith("show servers state") else answer

    result = apply(node_applier(lying), lb, {one.port: 1, two.port: 1})
    assert (result.method, result.reloaded) == ("reload", True)
    assert "web/slot2: expected" in result.fallback
    serves(lb.port, "two", timeout=2.0)


def test_with_no_haproxy_running_the_change_is_only_written_and_reported_down(haproxy_lb: StartHaproxy, backend: StartBackend) -> None:
    lb, one, two, _ = one_of_two(haproxy_lb, backend)
    lb.process.terminate()
    lb.process.wait(5)
    for sock in ("stats.sock", "master.sock"):  # as after a reboot: /run is empty
        (lb.dir / sock).unlink()
    text = web_config(lb.dir, lb.port, {one.port: 1, two.port: 1})
    [result] = node_applier().apply([node_target(lb.dir)], {"haproxy": text})
    assert (result.step, result.wrote, result.method, result.reloaded) == ("down", True, "none", False)
    assert "haproxy is not running (no haproxy master socket at" in (result.error or "")
    assert (lb.dir / "haproxy.cfg").read_text() == text, "the checked config waits for the next start"


class Load(threading.Thread):
    """One client, a new connection per request, until stopped (at most `limit` requests)."""

    def __init__(self, port: int, limit: int) -> None:
        super().__init__(name="load", daemon=True)
        self.port, self.limit = port, limit
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set() and sum(self.answers.values()) + len(self.failures) < self.limit:
            try:
                self.answers[get(self.port)] += 1
            except (OSError, urllib.error.URLError) as e:
                self.failures.append(str(e))


def test_200_runtime_changes_under_load_fail_no_request(haproxy_lb: StartHaproxy, backend: StartBackend) -> None:
    a, b, c = backend("a"), backend("b"), backend("c")

    def endpoints(i: int) -> dict[int, int]:  # every step changes a weight; b and c come and go
        chosen = {a.port: 1 + i % 3}
        chosen.update({b.port: 1} if i % 2 == 0 else {})
        chosen.update({c.port: 2} if i % 4 < 2 else {})
        return chosen

    lb = start(haproxy_lb, endpoints(0))
    applier, before = node_applier(), generation(lb.dir)
    load = Load(lb.port, limit=20_000)
    load.start()
    try:
        methods = Counter(apply(applier, lb, endpoints(i)).method for i in range(1, 201))
    finally:
        load.stop.set()
        load.join(10)
    assert methods == {"runtime": 200}
    assert generation(lb.dir) == before
    assert load.failures == [], f"{len(load.failures)} failed of {sum(load.answers.values())}: {load.failures[:3]}"
    assert sum(load.answers.values()) >= 2000 and set(load.answers) == {"a", "b", "c"}, load.answers
