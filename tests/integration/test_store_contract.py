"""The `Store` contract, run against every backend: real etcd, the YAML file store and memory.

etcd-only tests then prove the pyetcd caveats are handled: outages end quickly, dead or frozen
etcds break watches within seconds, leases expire for real, 100k keys snapshot in pages.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pyetcd

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from lbgen.adapters.file_store import FileStore
from lbgen.adapters.memory_store import MemoryStore
from lbgen.errors import Compacted, LeaseLost, StoreUnavailable
from lbgen.core.values import Snapshot, WatchEvent
from lbgen.ports import Store
from tests.support.etcd import EtcdFactory, EtcdServer, WatchReader
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration


def etcd_store(server: EtcdServer, **options: Any) -> EtcdStore:
    return EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", server.client_port),), **options))


def endpoint_value(port: int) -> bytes:
    return json.dumps({"address": "127.0.0.1", "port": port}).encode()


@dataclass
class Case:
    store: Store
    prefix: str  # every key of the test lives under it; ends with "/"
    compact: Callable[[int], None] | None


@pytest.fixture(params=["etcd", "file", "memory"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "etcd":
        etcd = etcd_store(request.getfixturevalue("etcd_server"))
        prefix = request.getfixturevalue("etcd_prefix")
        yield Case(etcd, f"{prefix}/services/", etcd.compact)
        etcd.close()
    elif request.param == "file":
        store = FileStore(tmp_path / "registry.yaml", prefix="/lbgen", must_exist=False)
        yield Case(store, "/lbgen/services/", None)
        store.close()
    elif request.param == "memory":
        memory = MemoryStore()
        yield Case(memory, "/lbgen/services/", memory.compact)


def key(case: Case, service: str, endpoint: str = "") -> str:
    return f"{case.prefix}{service}/endpoints/{endpoint}" if endpoint else f"{case.prefix}{service}/spec"


# --- every backend ----------------------------------------------------------------------------------


def test_put_get_delete_and_snapshot_at_one_revision(case: Case) -> None:
    first = case.store.put(key(case, "web", "a"), endpoint_value(8081))
    second = case.store.put(key(case, "web", "b"), endpoint_value(8082))
    assert second > first
    got = case.store.get(key(case, "web", "a"))
    assert got is not None and json.loads(got.value)["port"] == 8081 and got.mod_revision == first
    snapshot = case.store.snapshot(case.prefix)
    assert snapshot.revision >= second
    assert [kv.key for kv in snapshot.items] == [key(case, "web", "a"), key(case, "web", "b")]
    assert snapshot.cluster_id
    assert case.store.delete(key(case, "web", "a")) is True
    assert case.store.delete(key(case, "web", "a")) is False
    assert case.store.get(key(case, "web", "a")) is None
    assert [kv.key for kv in case.store.snapshot(case.prefix).items] == [key(case, "web", "b")]


def test_watch_from_a_revision_delivers_every_event_in_order(case: Case) -> None:
    start = case.store.snapshot(case.prefix).revision + 1
    reader = WatchReader(case.store.watch(case.prefix, start))
    try:
        for port in range(8081, 8086):
            case.store.put(key(case, "web", "a"), endpoint_value(port))
        case.store.delete(key(case, "web", "a"))
        events = reader.events(6)
    finally:
        reader.close()
    assert [json.loads(e.value)["port"] for e in events[:5]] == list(range(8081, 8086))
    assert events[5].kind == "delete" and events[5].key == key(case, "web", "a")
    assert [e.revision for e in events] == sorted({e.revision for e in events})


def test_watch_resumed_after_a_gap_gets_the_events_it_missed(case: Case) -> None:
    start = case.store.snapshot(case.prefix).revision + 1
    case.store.put(key(case, "web", "a"), endpoint_value(8081))
    reader = WatchReader(case.store.watch(case.prefix, start))
    last = reader.events(1)[-1].revision
    reader.close()
    case.store.put(key(case, "web", "b"), endpoint_value(8082))  # while nobody watches
    case.store.delete(key(case, "web", "a"))
    resumed = WatchReader(case.store.watch(case.prefix, last + 1))
    try:
        events = resumed.events(2)
    finally:
        resumed.close()
    assert [(e.kind, e.key) for e in events] == [("put", key(case, "web", "b")), ("delete", key(case, "web", "a"))]


@pytest.mark.parametrize("case", ["etcd", "memory"], indirect=True)
def test_watch_from_a_compacted_revision_raises_compacted(case: Case) -> None:
    assert case.compact is not None
    start = case.store.snapshot(case.prefix).revision + 1
    for port in range(8081, 8084):
        revision = case.store.put(key(case, "web", "a"), endpoint_value(port))
    case.compact(revision)
    reader = WatchReader(case.store.watch(case.prefix, start))
    try:
        error = reader.error()
    finally:
        reader.close()
    assert isinstance(error, Compacted)
    assert error.requested == start and error.compact_revision == revision


def test_cancel_ends_an_idle_watch(case: Case) -> None:
    reader = WatchReader(case.store.watch(case.prefix, 0))
    reader.close()  # asserts the iteration ended


# --- etcd: leases, outages, dead watches, size -----------------------------------------------------


@pytest.fixture
def etcd(etcd_server: EtcdServer) -> Iterator[EtcdStore]:
    store = etcd_store(etcd_server)
    yield store
    store.close()


def test_etcd_lease_keys_vanish_after_the_ttl_and_keep_alive_holds_them(etcd: EtcdStore, etcd_prefix: str) -> None:
    kept, dropped = etcd.grant_lease(2), etcd.grant_lease(2)
    etcd.put(f"{etcd_prefix}/kept", b"1", lease=kept)
    etcd.put(f"{etcd_prefix}/dropped", b"1", lease=dropped)
    deadline = time.monotonic() + 6
    while etcd.get(f"{etcd_prefix}/dropped") is not None:
        assert time.monotonic() < deadline, "a key outlived its 2 s lease by 4 s"
        assert etcd.keep_alive(kept) == 2
        time.sleep(0.5)
    assert etcd.get(f"{etcd_prefix}/kept") is not None
    with pytest.raises(LeaseLost):
        etcd.keep_alive(dropped)
    with pytest.raises(LeaseLost):
        etcd.put(f"{etcd_prefix}/late", b"1", lease=dropped)
    etcd.revoke_lease(kept)
    assert etcd.get(f"{etcd_prefix}/kept") is None
    etcd.revoke_lease(kept)  # revoking twice is not an error


def test_etcd_outage_fails_fast_and_calls_work_right_after_restart(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory()
    store = etcd_store(server)
    store.put("/o/a", b"1")
    server.stop()
    outage_end = time.monotonic() + 4  # long enough for gRPC's reconnect backoff to reach its cap
    while time.monotonic() < outage_end:  # pyetcd alone would refuse every call for 300 s
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{server.client_port}: put '/o/b'"):
            store.put("/o/b", b"2")
        # bounded by the call timeout the store promises, never a hang (the figure is printed)
        assert time.monotonic() - started < store.config.timeout, f"{time.monotonic() - started:.2f} s"
        time.sleep(0.1)  # a caller's retry interval, not a wait for a condition
    server.start()
    back = time.monotonic()
    # pyetcd alone locks a failed endpoint out for 300 s: a deadline far below that proves it is not
    wait_until(lambda: _succeeds(lambda: store.put("/o/b", b"2")), 15, "a put after etcd restarted")
    print(f"first successful put {time.monotonic() - back:.2f} s after etcd was healthy again")
    assert store.get("/o/a") is not None
    store.close()


def _succeeds(call: Callable[[], object]) -> bool:
    try:
        call()
    except StoreUnavailable:
        return False
    return True


@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_etcd_watch_on_a_dead_or_frozen_etcd_fails_within_seconds_then_resumes(
    etcd_factory: EtcdFactory, how: str
) -> None:
    server = etcd_factory()
    store = etcd_store(server, probe_interval=1.0, probe_timeout=1.0, timeout=2.0)
    reader = WatchReader(store.watch("/w/", store.snapshot("/w/").revision + 1))
    last = store.put("/w/a", b"1")
    reader.events(1)
    started = time.monotonic()
    server.kill() if how == "kill" else server.freeze()
    error = reader.error(timeout=8)
    elapsed = time.monotonic() - started
    print(f"watch on a {how} etcd raised {type(error).__name__} after {elapsed:.2f} s")
    assert isinstance(error, StoreUnavailable)
    assert f"127.0.0.1:{server.client_port}" in str(error)
    reader.close()
    assert not [t for t in threading.enumerate() if t.name == "etcd-watch /w/"], "the stream reader leaked"
    server.start() if how == "kill" else server.thaw()
    wait_until(lambda: _succeeds(lambda: store.put("/w/b", b"2")), 5, f"a put after the {how}")
    resumed = WatchReader(store.watch("/w/", last + 1))
    assert [e.key for e in resumed.events(1)] == ["/w/b"]
    resumed.close()
    store.close()


def test_etcd_watch_resumes_from_the_next_revision_after_a_restart(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory()
    store = etcd_store(server)
    reader = WatchReader(store.watch("/r/", store.snapshot("/r/").revision + 1))
    last = store.put("/r/a", b"1")
    reader.events(1)
    server.stop()
    assert isinstance(reader.error(), StoreUnavailable)
    reader.close()
    server.start()
    wait_until(lambda: _succeeds(lambda: store.put("/r/b", b"2")), 5, "a put after etcd restarted")
    resumed = WatchReader(store.watch("/r/", last + 1))
    assert [e.key for e in resumed.events(1)] == ["/r/b"]
    resumed.close()
    store.close()


def test_etcd_restored_from_scratch_has_a_new_cluster_id(etcd_factory: EtcdFactory) -> None:
    server = etcd_factory()
    store = etcd_store(server)
    store.put("/s/a", b"1")
    before = store.snapshot("/s/")
    server.wipe()
    after = wait_until(lambda: _snapshot_or_none(store, "/s/"), 5, "a snapshot of the wiped etcd")
    assert after is not None and after.items == () and after.cluster_id != before.cluster_id
    store.close()


def _snapshot_or_none(store: EtcdStore, prefix: str) -> Snapshot | None:
    try:
        return store.snapshot(prefix)
    except StoreUnavailable:
        return None


def test_etcd_cluster_list_fails_over_to_a_live_endpoint(etcd_server: EtcdServer, etcd_prefix: str) -> None:
    dead = ("127.0.0.1", free_port())
    store = EtcdStore(EtcdConfig(endpoints=(dead, ("127.0.0.1", etcd_server.client_port))))
    for i in range(5):  # whichever endpoint pyetcd picks first, every call succeeds
        store.put(f"{etcd_prefix}/f{i}", b"1")
    assert len(store.snapshot(f"{etcd_prefix}/").items) == 5
    store.close()


def test_etcd_snapshot_of_100k_keys_is_paged_at_one_revision(
    etcd: EtcdStore, etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    value = endpoint_value(8080) + b" " * 100  # ~150 bytes: 100k keys are ~20 MB, five times gRPC's default
    keys = [f"{etcd_prefix}/services/s{i // 100}/endpoints/e{i % 100}" for i in range(100_000)]
    started = time.monotonic()
    client = pyetcd.client("127.0.0.1", etcd_server.client_port)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda chunk: _put_batch(client, chunk, value), _chunks(keys, 128)))
    client.close()
    wrote = time.monotonic() - started
    started = time.monotonic()
    snapshot = etcd.snapshot(f"{etcd_prefix}/")
    took = time.monotonic() - started
    print(f"100k keys: written in {wrote:.1f} s, snapshot in {took:.2f} s")
    assert len(snapshot.items) == 100_000
    assert len({kv.key for kv in snapshot.items}) == 100_000
    assert max(kv.mod_revision for kv in snapshot.items) <= snapshot.revision


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _put_batch(client: pyetcd.Etcd3Client, keys: list[str], value: bytes) -> None:
    # One etcd transaction per 128 keys (etcd's default --max-txn-ops), written by a plain client.
    client.transaction(compare=[], success=[client.transactions.put(k, value) for k in keys], failure=[])


def test_etcd_cluster_keeps_serving_and_watching_while_each_member_restarts(
    etcd_factory: EtcdFactory
) -> None:
    members = etcd_factory.cluster(3)
    store = EtcdStore(EtcdConfig(endpoints=tuple(("127.0.0.1", m.client_port) for m in members)))
    start = store.snapshot("/c/").revision + 1
    reader = WatchReader(store.watch("/c/", start))
    written = []
    for n, member in enumerate(members):  # so the member in use is certainly stopped once
        member.stop()
        for i in range(3):
            store.put(f"/c/{n}-{i}", b"v")  # no retry here: failover is the store's job
            written.append(f"/c/{n}-{i}")
        member.start()
    seen: list[WatchEvent] = []
    resumes = 0
    while len(seen) < len(written):
        events, error = reader.collect(len(written) - len(seen))
        seen += events
        if error is not None:
            assert isinstance(error, StoreUnavailable)
            reader.close()
            resumes += 1
            reader = WatchReader(store.watch("/c/", (seen[-1].revision if seen else start - 1) + 1))
    reader.close()
    store.close()
    print(f"3-member cluster, each member restarted in turn: watch resumed {resumes} times, no event lost")
    assert [e.key for e in seen] == written


def test_snapshot_pages_are_the_snapshot_at_one_revision(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lbgen.adapters.etcd_store.PAGE_SIZE", 3)
    for i in range(8):
        case.store.put(key(case, f"s{i}", "a"), endpoint_value(8000 + i))
    pages = list(case.store.snapshot_pages(case.prefix))
    whole = case.store.snapshot(case.prefix)
    assert [kv for page in pages for kv in page.items] == list(whole.items) and len(whole.items) == 8
    assert {(page.revision, page.cluster_id) for page in pages} == {(whole.revision, whole.cluster_id)}
    if isinstance(case.store, EtcdStore):
        assert [len(page.items) for page in pages] == [3, 3, 2]


def test_etcd_snapshot_pages_raise_compacted_when_their_revision_goes(
    etcd: EtcdStore, etcd_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lbgen.adapters.etcd_store.PAGE_SIZE", 2)
    for i in range(8):
        revision = etcd.put(f"{etcd_prefix}/services/s{i}/spec", b"{}")
    pages = etcd.snapshot_pages(f"{etcd_prefix}/")
    first = next(pages)
    etcd.compact(etcd.put(f"{etcd_prefix}/services/s0/spec", b"{}"))  # the snapshot's revision is gone
    with pytest.raises(Compacted):
        list(pages)  # the page requested before the compaction may still arrive; a later one cannot
    assert first.revision == revision
