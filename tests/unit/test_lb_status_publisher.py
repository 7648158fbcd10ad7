"""The LB status publisher against the in-memory store: what it writes, when it does not write,
and how it survives an outage and a lost lease; then wired to a real watcher loop."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.lb_node_status import LbStatus, decode_lb_status
from lbgen.core.settings import GUARD_OFF, Settings, Target, Wait
from lbgen.services.status_publisher import StatusPublisher
from lbgen.services.watcher import Watcher, WatcherStatus
from tests.unit.test_watcher import RecordingApplier, SystemClock, endpoint, key

P = "/lbgen"
KEY = f"{P}/lb/lb-1"


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.005)


def published(store: MemoryStore) -> LbStatus | None:
    kv = store.get(KEY)
    return decode_lb_status("lb-1", kv.value) if kv else None


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def publisher(store: MemoryStore) -> Iterator[StatusPublisher]:
    running = StatusPublisher(store, P, "lb-1", ["nginx", "haproxy"], ttl=1, wall=lambda: 1700000000.0,
                              retry=lambda attempt: 0.02)
    running.start()
    yield running
    running.stop()


def test_a_new_node_publishes_that_it_has_applied_nothing_yet(publisher: StatusPublisher, store: MemoryStore) -> None:
    wait_for(lambda: published(store))
    status = published(store)
    assert status is not None and status.revision == 0 and not status.connected
    assert set(status.targets) == {"nginx", "haproxy"} and store.get(KEY).lease  # type: ignore[union-attr]


def test_the_node_revision_is_the_slowest_targets_and_errors_are_per_target(
        publisher: StatusPublisher, store: MemoryStore) -> None:
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 12, "haproxy": 9}, errors={"haproxy": "check: boom"}))
    wait_for(lambda: (s := published(store)) and s.revision == 9)
    status = published(store)
    assert status is not None and status.connected
    assert status.targets["nginx"].revision == 12 and status.targets["nginx"].applied_at == 1700000000.0
    assert status.targets["haproxy"].error == "check: boom" and status.errors == {"haproxy": "check: boom"}


def test_quarantined_services_are_published_per_target(publisher: StatusPublisher, store: MemoryStore) -> None:
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 7, "haproxy": 7},
                                   quarantined={"nginx": {"web": "[emerg] host not found"}}))
    wait_for(lambda: (s := published(store)) and s.quarantined)
    assert published(store).quarantined == [("nginx", "web", "[emerg] host not found")]  # type: ignore[union-attr]
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 8, "haproxy": 8}))
    wait_for(lambda: (s := published(store)) and s.revision == 8)
    assert published(store).quarantined == []  # type: ignore[union-attr]


def test_runtime_updates_and_fallbacks_are_published_per_target(publisher: StatusPublisher,
                                                                store: MemoryStore) -> None:
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 7, "haproxy": 7},
                                   runtime_updates={"nginx": 5}, runtime_fallbacks={"nginx": 1}))
    wait_for(lambda: (s := published(store)) and s.revision == 7)
    nginx = published(store).targets["nginx"]  # type: ignore[union-attr]
    assert (nginx.runtime_updates, nginx.runtime_fallbacks) == (5, 1)


def test_an_unchanged_status_is_not_written_again(publisher: StatusPublisher, store: MemoryStore) -> None:
    same = WatcherStatus(connected=True, applied={"nginx": 5, "haproxy": 5})
    publisher.update(same)
    wait_for(lambda: (s := published(store)) and s.revision == 5)
    written = store.get(KEY).mod_revision  # type: ignore[union-attr]
    kept, keep_alive = [0], store.keep_alive

    def counting_keep_alive(lease: int) -> int:
        kept[0] += 1
        return keep_alive(lease)

    store.keep_alive = counting_keep_alive  # type: ignore[method-assign]
    for _ in range(20):
        publisher.update(same)
    wait_for(lambda: kept[0] >= 2, timeout=30)  # a whole publisher step ran after the updates: only the lease was refreshed
    assert store.get(KEY).mod_revision == written  # type: ignore[union-attr]


def test_a_disconnected_watcher_publishes_the_registry_error(publisher: StatusPublisher, store: MemoryStore) -> None:
    publisher.update(WatcherStatus(connected=False, last_error="etcd: unavailable"))
    wait_for(lambda: (s := published(store)) and s.error)
    assert published(store).errors == {"registry": "etcd: unavailable"}  # type: ignore[union-attr]


def test_after_an_outage_the_latest_status_is_published(publisher: StatusPublisher, store: MemoryStore) -> None:
    wait_for(lambda: published(store))
    store.set_available(False)
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 3, "haproxy": 3}))
    time.sleep(0.1)
    store.set_available(True)
    wait_for(lambda: (s := published(store)) and s.revision == 3)


def test_a_lost_lease_is_replaced_and_the_status_written_again(publisher: StatusPublisher, store: MemoryStore) -> None:
    wait_for(lambda: published(store))
    lease = store.get(KEY).lease  # type: ignore[union-attr]
    store.revoke_lease(lease)  # as when etcd was away longer than the TTL
    assert store.get(KEY) is None
    wait_for(lambda: (kv := store.get(KEY)) and kv.lease != lease)


def test_stop_revokes_the_lease_so_the_status_leaves_at_once(store: MemoryStore) -> None:
    publisher = StatusPublisher(store, P, "lb-1", ["nginx"], ttl=30)
    publisher.start()
    wait_for(lambda: published(store))
    publisher.stop()
    assert store.get(KEY) is None


def test_a_watcher_publishing_its_status_does_not_wake_itself_forever(store: MemoryStore) -> None:
    """Each status write is a registry change: a watcher that followed it would render, apply,
    publish a newer revision and wake again, with every other LB node, forever."""
    applier = RecordingApplier()
    publisher = StatusPublisher(store, P, "lb-1", ["lb"], ttl=30)
    settings = Settings(registry=("memory",), prefix=P, wait=Wait(0.01, 0.1), guard=GUARD_OFF,
                        targets=(Target(name="lb", template="lb.j2", dest="/unused"),))
    watcher = Watcher(settings, store, applier, SystemClock(), read_template=lambda _: "{{ services|length }}",
                      on_status=publisher.update)
    revision = store.put(key("web", "a"), endpoint(1))
    publisher.start()
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: (s := published(store)) and s.revision >= revision and s.connected)
        passes, registry_revision = len(applier.passes), store.revision
        time.sleep(0.5)
        assert (len(applier.passes), store.revision) == (passes, registry_revision)
    finally:
        watcher.stop()
        thread.join(5)
        publisher.stop()


class CountingStore(MemoryStore):
    """Counts the status puts."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        self.puts += 1
        return super().put(key, value, lease=lease)


def stepped_publisher() -> tuple[StatusPublisher, CountingStore, list[float]]:
    """A publisher driven by `step()` on a clock the test moves; no thread."""
    store, now = CountingStore(), [100.0]
    return StatusPublisher(store, P, "lb-1", ["nginx"], ttl=30, clock=lambda: now[0]), store, now


def test_a_burst_of_applies_is_written_at_most_once_a_second_and_the_last_state_always() -> None:
    publisher, store, now = stepped_publisher()
    for revision in range(1, 1001):  # 1,000 applies within one second, the thread woken by each
        publisher.update(WatcherStatus(connected=True, applied={"nginx": revision}))
        publisher.step()
        now[0] += 0.000999
    assert store.puts <= 2
    assert published(store).revision < 1000  # type: ignore[union-attr]
    now[0] += 1.0
    publisher.step()
    assert store.puts <= 3 and published(store).revision == 1000  # type: ignore[union-attr]


@pytest.mark.parametrize("change", [
    WatcherStatus(connected=True, applied={"nginx": 2}, errors={"nginx": "check: boom"}),
    WatcherStatus(connected=True, applied={"nginx": 1}, down={"nginx": "not running"}),
    WatcherStatus(connected=True, applied={"nginx": 1}, quarantined={"nginx": {"web": "host not found"}}),
    WatcherStatus(connected=False, applied={"nginx": 1}, last_error="etcd: unavailable"),
], ids=["error", "lb-down", "quarantine", "disconnected"])
def test_a_change_an_operator_acts_on_is_written_at_once(change: WatcherStatus) -> None:
    publisher, store, now = stepped_publisher()
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 1}))
    publisher.step()
    now[0] += 0.01
    publisher.update(change)
    publisher.step()
    assert store.puts == 2  # the first write, then the change at once


def test_stop_writes_the_status_held_back_before_revoking() -> None:
    publisher, store, now = stepped_publisher()
    seen: list[int] = []
    revoke = store.revoke_lease

    def revoking(lease: int) -> None:
        seen.append(published(store).revision)  # type: ignore[union-attr]
        revoke(lease)

    store.revoke_lease = revoking  # type: ignore[method-assign]
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 1}))
    publisher.step()
    publisher.update(WatcherStatus(connected=True, applied={"nginx": 2}))
    publisher.step()  # held back: within a second of the first write
    publisher.stop()
    assert seen == [2] and store.get(KEY) is None
