"""The one lease keeper (issue 11): driven by its owner's loop on an injected clock, or on a thread
of its own reporting through callbacks; a lost lease is the owner's to drop; revoke at stop."""

from __future__ import annotations

import threading

import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.errors import LeaseLost, StoreError
from lbgen.services.lease_keeper import LeaseKeeper
from tests.support.util import wait_until


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.kept: list[int] = []

    def keep_alive(self, lease: int) -> int:
        self.kept.append(lease)
        return super().keep_alive(lease)


def test_tick_keeps_alive_every_ttl_over_3_on_the_injected_clock() -> None:
    store, now = CountingStore(), [100.0]
    keeper = LeaseKeeper(store, 15, "test", clock=lambda: now[0])
    assert keeper.lease == 0 and keeper.tick() == 5.0 and store.kept == []  # nothing to keep yet
    lease = keeper.grant()
    assert keeper.lease == lease and keeper.tick() == 5.0 and store.kept == []
    now[0] = 104.0
    assert keeper.tick() == pytest.approx(1.0) and store.kept == []
    now[0] = 105.0
    assert keeper.tick() == 5.0 and store.kept == [lease]
    now[0] = 111.0  # late: kept at once, the next one TTL/3 after this
    assert keeper.tick() == 5.0 and store.kept == [lease, lease]


def test_a_lost_lease_raises_until_the_owner_drops_it_and_grants_anew() -> None:
    store, now = MemoryStore(), [0.0]
    keeper = LeaseKeeper(store, 3, "test", clock=lambda: now[0])
    lease = keeper.grant()
    store.revoke_lease(lease)
    now[0] = 1.0
    with pytest.raises(LeaseLost):
        keeper.tick()
    assert keeper.lease == lease  # the owner's loop owns the lease
    keeper.drop()
    assert keeper.lease == 0 and keeper.grant() not in (0, lease)


def test_revoke_deletes_the_keys_on_the_lease_and_is_a_no_op_without_one() -> None:
    store = MemoryStore()
    keeper = LeaseKeeper(store, 30, "test")
    assert keeper.revoke() == 0
    lease = keeper.grant()
    store.put("/k", b"v", lease=lease)
    assert keeper.revoke() == lease and keeper.lease == 0 and store.get("/k") is None


def test_a_failed_revoke_raises_and_keeps_the_lease_held() -> None:
    store = MemoryStore()
    keeper = LeaseKeeper(store, 30, "test")
    lease = keeper.grant()
    store.set_available(False)
    with pytest.raises(StoreError):
        keeper.revoke()
    assert keeper.lease == lease


def test_the_thread_keeps_alive_and_reports_errors_and_a_lost_lease() -> None:
    store = CountingStore()
    keeper = LeaseKeeper(store, 1, "test")  # a keep-alive every 1/3 s
    lost: list[int] = []
    errors: list[StoreError] = []
    kept = threading.Event()
    lease = keeper.grant()
    keeper.start("test-keepalive", lost.append, errors.append, kept.set)
    try:
        wait_until(kept.is_set, 10, "a keep-alive")
        assert lease in store.kept
        store.set_available(False)
        wait_until(lambda: errors, 10, "a failed keep-alive reported")
        store.set_available(True)
        store.revoke_lease(lease)
        wait_until(lambda: lost, 10, "the lost lease reported")
        assert lost[0] == lease and keeper.lease == lease  # reported, not dropped
    finally:
        keeper.stop()
    assert not any(t.name == "test-keepalive" for t in threading.enumerate())
