"""The user's story, end to end: `lbgen watch` (the Watcher on the real etcd, the CLI's applier
wiring) keeps HAProxy in step with the registry; endpoints come and go through the Runtime API and
the worker that started is the worker that is still serving."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator

from msgspec.structs import replace
import pytest

from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.adapters.process import SystemClock
from lbgen.cli.lb_node import build_applier
from lbgen.core.registry_url import parse_registry_url
from lbgen.core.schema import endpoint_key, spec_key
from lbgen.core.settings import GUARD_OFF, Settings, Wait
from lbgen.services.watcher import Watcher
from tests.support.etcd import EtcdServer
from tests.support.haproxy_node import TEMPLATE, generation, node_target, servers, web_config
from tests.support.lb import Backend, ConfFor, Lb, get, serves
from tests.support.util import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def store(etcd_server: EtcdServer) -> Iterator[EtcdStore]:
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", etcd_server.client_port),)))
    yield store
    store.close()


def put_endpoint(store: EtcdStore, prefix: str, backend: Backend) -> int:
    value = json.dumps({"address": "127.0.0.1", "port": backend.port}).encode()
    return store.put(endpoint_key(prefix, "web", f"ep{backend.port}"), value)


def test_endpoints_put_and_deleted_in_etcd_are_served_without_a_reload(
    store: EtcdStore, etcd_server: EtcdServer, etcd_prefix: str,
    haproxy_lb: Callable[[ConfFor], Lb], backend: Callable[[str], Backend],
) -> None:
    one, two = backend("one"), backend("two")
    lb = haproxy_lb(lambda lb_dir, port: web_config(lb_dir, port, {one.port: 1}))
    store.put(spec_key(etcd_prefix, "web"), json.dumps({"listen": lb.port}).encode())
    put_endpoint(store, etcd_prefix, one)
    target = replace(node_target(lb.dir), template="haproxy.cfg.j2")
    settings = Settings(registry=parse_registry_url(etcd_server.url), targets=(target,), prefix=etcd_prefix,
                        wait=Wait(0, 0), guard=GUARD_OFF)
    watcher = Watcher(settings, store, build_applier(), SystemClock(), read_template=lambda path: TEMPLATE)
    thread = threading.Thread(target=watcher.run, name="watcher", daemon=True)
    thread.start()
    try:
        wait_until(lambda: watcher.status.applied_revision, 10.0, "the first pass")
        before = generation(lb.dir)
        revision = put_endpoint(store, etcd_prefix, two)
        serves(lb.port, "two", timeout=5.0)
        assert watcher.status.applied_revision >= revision
        store.delete(endpoint_key(etcd_prefix, "web", f"ep{one.port}"))
        wait_until(lambda: all(get(lb.port) == "two" for _ in range(10)), 5.0, "only two served")
        assert generation(lb.dir) == before, "no new worker: both changes went through the runtime API"
        assert watcher.status.failures == {}
    finally:
        watcher.stop()
        thread.join(10)


def test_with_random_ids_the_watcher_keeps_surviving_endpoints_in_their_slots(
    store: EtcdStore, etcd_server: EtcdServer, etcd_prefix: str,
    haproxy_lb: Callable[[ConfFor], Lb], backend: Callable[[str], Backend],
) -> None:
    """Issue 11, as `lbgen watch` runs (the bounded renderer reads the live slots back)."""
    rng = random.Random(2026)
    ids = {b.port: f"{rng.getrandbits(64):016x}" for b in (backend(f"b{i}") for i in range(4))}
    lb = haproxy_lb(lambda lb_dir, port: web_config(lb_dir, port, {}))
    store.put(spec_key(etcd_prefix, "web"), json.dumps({"listen": lb.port}).encode())
    for port, endpoint_id in ids.items():
        value = json.dumps({"address": "127.0.0.1", "port": port}).encode()
        store.put(endpoint_key(etcd_prefix, "web", endpoint_id), value)
    target = replace(node_target(lb.dir), template="haproxy.cfg.j2")
    settings = Settings(registry=parse_registry_url(etcd_server.url), targets=(target,), prefix=etcd_prefix,
                        wait=Wait(0, 0), guard=GUARD_OFF)
    watcher = Watcher(settings, store, build_applier(), SystemClock(), read_template=lambda path: TEMPLATE,
                      renderer=BoundedRenderer())
    thread = threading.Thread(target=watcher.run, name="watcher", daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(in_service(lb)) == 4, 10.0, "four endpoints in service")
        before, was = generation(lb.dir), in_service(lb)
        for leaving in rng.sample(sorted(ids), 2):
            store.delete(endpoint_key(etcd_prefix, "web", ids.pop(leaving)))
            wait_until(lambda: leaving not in in_service(lb), 10.0, f"endpoint on port {leaving} gone")
            assert in_service(lb) == {p: was[p] for p in ids}, "the others keep their slots"
        assert generation(lb.dir) == before, "no new worker: the changes went through the runtime API"
        assert watcher.status.failures == {}
    finally:
        watcher.stop()
        thread.join(10)


def in_service(lb: Lb) -> dict[int, str]:
    """Backend port → slot name of the servers not in maintenance (`show servers state web`)."""
    return {s.port: name for name, s in servers(lb.dir).items() if not s.admin & 1}
