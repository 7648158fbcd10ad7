"""The in-memory store keeps etcd's rules: revisions, replayed history, compaction, leases on a clock."""

from __future__ import annotations

import threading

import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.errors import Compacted, LeaseLost, StoreUnavailable
from lbgen.core.values import WatchEvent
from tests.unit.fakes import FakeClock


def drain(store: MemoryStore, prefix: str, start: int) -> list[WatchEvent]:
    """Every event the watch has queued so far (cancel queues the end marker after them)."""
    watch = store.watch(prefix, start)
    watch.cancel()
    return [event for batch in watch for event in batch]


def test_revisions_grow_by_one_per_change_and_start_at_one() -> None:
    store = MemoryStore()
    assert store.snapshot("/").revision == 1
    assert store.put("/a", b"1") == 2
    assert store.apply({"/b": b"2", "/c": b"3"}) == 3
    assert store.delete("/b") is True
    assert store.delete("/b") is False
    assert store.snapshot("/").revision == 4
    assert [(kv.key, kv.mod_revision) for kv in store.snapshot("/").items] == [("/a", 2), ("/c", 3)]


def test_a_transaction_is_one_batch_at_one_revision() -> None:
    store = MemoryStore()
    store.put("/p/gone", b"x")
    store.apply({"/p/a": b"1", "/p/b": b"2"}, deletes=["/p/gone", "/p/never-there"])
    watch = store.watch("/p/", 3)
    watch.cancel()
    assert list(watch) == [[WatchEvent("delete", "/p/gone", b"", 3), WatchEvent("put", "/p/a", b"1", 3),
                            WatchEvent("put", "/p/b", b"2", 3)]]


def test_watch_replays_history_then_follows_live_changes_under_its_prefix() -> None:
    store = MemoryStore()
    store.put("/p/a", b"1")
    store.put("/other", b"x")
    watch = store.watch("/p/", 2)
    store.put("/p/b", b"2")
    watch.cancel()
    assert [e.key for batch in watch for e in batch] == ["/p/a", "/p/b"]


def test_watch_from_zero_starts_with_the_next_change() -> None:
    store = MemoryStore()
    store.put("/p/a", b"1")
    watch = store.watch("/p/", 0)
    store.put("/p/b", b"2")
    watch.cancel()
    assert [e.key for batch in watch for e in batch] == ["/p/b"]


@pytest.mark.parametrize(("compact_to", "start", "compacted"), [(3, 2, True), (3, 3, False), (3, 4, False)],
                         ids=["before", "at", "after"])
def test_compaction_drops_history_before_the_revision(compact_to: int, start: int, compacted: bool) -> None:
    store = MemoryStore()
    for i in range(4):
        store.put(f"/p/{i}", b"v")
    store.compact(compact_to)
    if compacted:
        with pytest.raises(Compacted) as raised:
            list(store.watch("/p/", start))
        assert (raised.value.requested, raised.value.compact_revision) == (start, compact_to)
    else:
        assert [e.revision for e in drain(store, "/p/", start)] == list(range(start, 6))


def test_bounded_history_compacts_by_itself() -> None:
    store = MemoryStore(history=2)
    for i in range(5):
        store.put(f"/p/{i}", b"v")  # revisions 2..6; the last two are kept
    with pytest.raises(Compacted):
        list(store.watch("/p/", 4))
    assert [e.revision for e in drain(store, "/p/", 5)] == [5, 6]


def test_lease_keys_vanish_when_the_clock_passes_the_ttl_in_one_change() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = store.grant_lease(10)
    store.put("/p/a", b"1", lease=lease)
    store.put("/p/b", b"2", lease=lease)
    watch = store.watch("/p/", 0)
    clock.time += 9.9
    assert store.get("/p/a") is not None
    clock.time += 0.2
    store.expire_leases()
    watch.cancel()
    assert list(watch) == [[WatchEvent("delete", "/p/a", b"", 4), WatchEvent("delete", "/p/b", b"", 4)]]
    with pytest.raises(LeaseLost):
        store.keep_alive(lease)
    with pytest.raises(LeaseLost):
        store.put("/p/c", b"3", lease=lease)


def test_keep_alive_extends_a_lease_and_revoke_deletes_its_keys() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = store.grant_lease(10)
    store.put("/p/a", b"1", lease=lease)
    for _ in range(3):
        clock.time += 8
        assert store.keep_alive(lease) == 10
    assert store.get("/p/a") is not None
    store.revoke_lease(lease)
    assert store.get("/p/a") is None


def test_overwriting_a_key_without_lease_detaches_it_from_the_lease() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = store.grant_lease(5)
    store.put("/p/a", b"1", lease=lease)
    store.put("/p/a", b"2")
    clock.time += 6
    assert store.get("/p/a") is not None


def test_an_outage_fails_calls_and_open_watches_until_it_ends() -> None:
    store = MemoryStore()
    watch = store.watch("/p/", 0)
    store.set_available(False)
    with pytest.raises(StoreUnavailable):
        list(watch)
    with pytest.raises(StoreUnavailable):
        store.put("/p/a", b"1")
    store.set_available(True)
    assert store.put("/p/a", b"1") == 2


def test_wipe_is_a_restore_from_scratch() -> None:
    store = MemoryStore()
    store.put("/p/a", b"1")
    before = store.snapshot("/p/")
    store.wipe()
    after = store.snapshot("/p/")
    assert (after.revision, after.items) == (1, ())
    assert after.cluster_id != before.cluster_id


def test_concurrent_writers_each_get_a_distinct_revision() -> None:
    store = MemoryStore()
    revisions: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(200):
            revision = store.put(f"/p/{n}/{i}", b"v")
            with lock:
                revisions.append(revision)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(revisions) == list(range(2, 802))
    assert len(store.snapshot("/p/").items) == 800
