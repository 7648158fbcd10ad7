"""An agent reads only its own keys (issue 15): the keys on its lease, on its previous run's lease,
and the ones it wants to write; never another node's, never the whole `services/` prefix."""

from __future__ import annotations

from typing import Any, Callable

from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.schema import agent_key
from lbgen.core.values import KeyValue, Snapshot
from tests.unit.test_agent import (  # noqa: F401 (fixtures)
    NODE, PREFIX, FakeDocker, Running, endpoints, key, stale, start, store, wait_for, web,
)


class CountingStore:
    """The real store, with every read recorded: which call, and which keys it returned."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.seen: set[str] = set()

    def snapshot(self, prefix: str) -> Snapshot:
        self.calls.append(f"snapshot {prefix}")
        found = self.inner.snapshot(prefix)
        self.seen.update(kv.key for kv in found.items)
        return found

    def get(self, key: str) -> KeyValue | None:
        self.calls.append("get")
        found = self.inner.get(key)
        self.seen.update([found.key] if found else [])
        return found

    def get_many(self, keys: list[str]) -> list[KeyValue]:
        self.calls.append("get_many")
        found = self.inner.get_many(keys)
        self.seen.update(kv.key for kv in found)
        return found

    def lease_keys(self, lease: int) -> tuple[str, ...] | None:
        self.calls.append("lease_keys")
        found = self.inner.lease_keys(lease)
        self.seen.update(found or ())
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_resyncs_read_no_other_node_s_key(store: MemoryStore) -> None:
    for n in range(1, 4):
        store.put(*stale(n, "host-b"))
    store.put(agent_key(PREFIX, "host-b"), b'{"docker_reachable": true}')
    counting = CountingStore(store)
    running = Running(counting, FakeDocker(web(1), web(2)), resync_interval=0.05)  # type: ignore[arg-type]
    try:
        wait_for(lambda: len([c for c in counting.calls if c == "lease_keys"]) >= 5, "five resyncs")
    finally:
        running.stop()
    assert counting.seen and all("host-b" not in seen for seen in counting.seen), counting.seen
    assert f"snapshot {PREFIX}/services/" not in counting.calls
    assert {key(1), key(2)} <= counting.seen


def test_a_key_naming_this_node_on_no_lease_of_it_is_left_alone(
        store: MemoryStore, start: Callable[..., Running]) -> None:
    """Written by hand: the agent cannot find it without reading everybody's keys, so it stays."""
    store.put(*stale(9, NODE))
    start(FakeDocker(web(1)))
    wait_for(lambda: key(1) in endpoints(store))
    assert set(endpoints(store)) == {key(1), key(9)}


def test_a_desired_key_held_by_another_node_is_not_overwritten(
        store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    running = start(docker)
    wait_for(lambda: key(1) in endpoints(store))
    squatter = stale(2, "host-b")
    store.put(key(2), squatter[1])  # host-b's value in host-a's id space
    docker.run(web(2))
    wait_for(lambda: running.metric("lbgen_agent_errors_total", kind="conflict") == 1, "conflict reported")
    assert endpoints(store)[key(2)]["node"] == "host-b"
