"""The apply pipeline against a real HAProxy in master-worker mode: check, swap, master-socket
reload, verify with `show proc`, rollback."""

from __future__ import annotations

import socket
from typing import Callable

import pytest

from lbgen.adapters.kinds.haproxy.control import HaproxyControl
from lbgen.adapters.process import SystemClock
from lbgen.core.values import Generation
from lbgen.services.applier import Applier
from tests.support.lb import Backend, ConfFor, Lb, get, haproxy_proxy, serves

pytestmark = pytest.mark.integration

StartHaproxy = Callable[[ConfFor], Lb]


def proxy_to(backend: Backend) -> ConfFor:
    return lambda lb_dir, port: haproxy_proxy(lb_dir, port, backend.port)


def generation(lb: Lb) -> Generation:
    observed = HaproxyControl(lb.target(), SystemClock()).observe()
    assert observed is not None, "haproxy is not running"
    return observed


def test_a_good_change_is_served_by_a_new_worker_generation(
    haproxy_lb: StartHaproxy, backend: Callable[[str], Backend], applier: Applier
) -> None:
    old, new = backend("old"), backend("new")
    lb = haproxy_lb(proxy_to(old))
    assert get(lb.port) == "old"
    before = generation(lb)
    [result] = applier.apply([lb.target()], {"haproxy": haproxy_proxy(lb.dir, lb.port, new.port)})
    assert (result.ok, result.wrote, result.reloaded) == (True, True, True), result.error
    after = generation(lb)
    assert (after.master, after.reloads, after.failed) == (before.master, before.reloads + 1, before.failed)
    assert after.workers - before.workers
    serves(lb.port, "new", timeout=1.0)  # the old worker stops listening once the new one runs


def test_a_config_failing_the_check_leaves_dest_and_haproxy_untouched(
    haproxy_lb: StartHaproxy, backend: Callable[[str], Backend], applier: Applier
) -> None:
    lb = haproxy_lb(proxy_to(backend("old")))
    live, before = lb.conf.read_text(), generation(lb)
    [result] = applier.apply([lb.target()], {"haproxy": live.replace("default_backend app", "default_backend nosuch")})
    assert (result.ok, result.step, result.wrote) == (False, "check", False)
    assert "nosuch" in result.output
    assert lb.conf.read_text() == live and generation(lb) == before and get(lb.port) == "old"


def test_a_reload_haproxy_rejects_is_rolled_back_and_the_old_backend_keeps_serving(
    haproxy_lb: StartHaproxy, backend: Callable[[str], Backend], applier: Applier
) -> None:
    old = backend("old")
    lb = haproxy_lb(proxy_to(old))
    live, before = lb.conf.read_text(), generation(lb)
    with socket.socket() as taken:  # haproxy -c does not bind, so only the reload can find this out
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        extra = f"  bind 127.0.0.1:{taken.getsockname()[1]}\n"
        [result] = applier.apply([lb.target()], {"haproxy": haproxy_proxy(lb.dir, lb.port, old.port, extra)})
    assert (result.ok, result.wrote, result.rolled_back) == (False, True, True), result.error
    assert "rejected the new config" in (result.error or "")
    after = generation(lb)
    assert after.reloads == before.reloads + 2, "the rejected reload, then the LKG's"
    assert after.workers - before.workers, "the LKG's reload started a new generation"
    assert lb.conf.read_text() == live and get(lb.port) == "old"
