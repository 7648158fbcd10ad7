"""The drop guard with a real `lbgen watch`, etcd, nginx and HAProxy (issue 10.6): a watcher
restarted while the agents were down keeps serving what it last applied; a hold keeps only the
service that dropped while another service's change goes live; a service removed on purpose
(spec deleted) leaves at once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_watcher_e2e import HAPROXY_ADDR, NGINX_ADDR, Node, get, shared_etcd  # noqa: F401
from tests.support.etcd import EtcdServer
from tests.support.lb import Backend
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def two_services(tmp_path: Path, shared_etcd: EtcdServer,  # noqa: F811
                 backend: Callable[[str], Backend]) -> Iterator[tuple[Node, int]]:
    """A Node serving `web` (backend `a`) on its port and `api` (backend `api1`) on another."""
    node = Node(tmp_path, shared_etcd, "20ms:100ms")
    api_port = free_port()
    try:
        node.put_spec()
        node.put_endpoint("host-a.web.1", backend("a").port)
        node.put_spec("api", listen=api_port)
        node.put_endpoint("host-a.api.1", backend("api1").port, service="api")
        node.start()
        node.serves("a")
        both_answer(api_port, "api1")
        yield node, api_port
    finally:
        node.close()


def both_answer(port: int, body: str, timeout: float = 20.0) -> None:
    for address in (NGINX_ADDR, HAPROXY_ADDR):
        wait_until(lambda: get(address, port) == body, timeout, f"{address}:{port} to answer {body!r}", interval=0.02)


def test_a_watcher_restarted_while_the_agents_were_down_keeps_serving(
        two_services: tuple[Node, int], backend: Callable[[str], Backend]) -> None:
    n, api_port = two_services
    saved = n.dir / ".nginx.conf.applied.json"
    wait_until(lambda: saved.exists() and sorted(json.loads(saved.read_text())["services"]) == ["api", "web"],
               20, "the applied catalog beside dest")
    assert n.watcher is not None
    n.watcher.terminate()
    assert n.watcher.wait(20) == 0
    n.delete("web", "host-a.web.1")  # the agents' leases ran out while the watcher was away
    n.put_endpoint("host-a.api.1", backend("api2").port, service="api")
    mark = n.mark()
    n.start_watch()
    both_answer(api_port, "api2")  # the other change goes live...
    n.wait_log("nginx: drop guard: holding web at the last applied state", since=mark)
    assert n.answers() == ("a", "a"), "...while web is held at what the LBs served (not a 503)"
    assert n.count("drop guard: holding", since=mark) == 2, "one WARNING per target, not one per pass"

    n.put_endpoint("host-b.web.1", backend("b").port)  # an agent is back: the hold ends
    n.serves("b")
    n.wait_log("nginx: drop guard: hold ended", since=mark)


def test_a_service_whose_spec_is_deleted_leaves_at_once(two_services: tuple[Node, int]) -> None:
    n, api_port = two_services
    mark = n.mark()
    n.delete("api")
    n.delete("api", "host-a.api.1")
    wait_until(lambda: f":{api_port}" not in n.nginx_conf.read_text() + n.haproxy_conf.read_text(), 20,
               "api out of both configs")
    assert both_refuse(api_port) and n.answers() == ("a", "a")
    assert n.count("drop guard", since=mark) == 0


def both_refuse(port: int) -> bool:
    return wait_until(lambda: get(NGINX_ADDR, port) == "" and get(HAPROXY_ADDR, port) == "", 10,
                      f"nothing to answer on port {port}")
