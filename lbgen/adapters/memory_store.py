"""An in-memory `Store` with etcd's semantics: revisions, prefix watches, compaction, leases.

It is the file registry's engine (`file_store`) and the fake store of unit tests. Like etcd: the
revision starts at 1 and grows by one per change (a transaction or a lease expiry is one change,
however many keys it touches); a watch replays history from its start revision, and a start
revision older than the kept history raises `Compacted`. History is bounded (`history` changes),
so a slow watcher can be compacted past, as with etcd's auto-compaction.

Leases expire against the injected `Clock`: whenever the store is used (or `expire_leases()` is
called), leases whose TTL has run out are revoked and their keys deleted. `set_available(False)`
simulates an outage: every call and every open watch raise `StoreUnavailable`. `wipe()` simulates
an etcd restored from scratch (revision back to 1, a new cluster id).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from typing import Iterable, Iterator, Mapping, Sequence

import msgspec

from lbgen.adapters.process import SystemClock
from lbgen.errors import Compacted, LeaseLost, StoreUnavailable
from lbgen.core.values import KeyValue, Snapshot, WatchEvent
from lbgen.ports import Clock

_END = object()


class _Lease(msgspec.Struct):
    ttl: int
    deadline: float
    keys: set[str] = set()


class MemoryWatch:
    """A watch on a `MemoryStore`: batches arrive through a queue filled by the writers."""

    def __init__(self, store: MemoryStore, prefix: str) -> None:
        self.prefix = prefix
        self._store = store
        self._queue: queue.Queue[object] = queue.Queue()

    def offer(self, batch: list[WatchEvent]) -> None:
        """Queue the events of `batch` under this watch's prefix (called under the store's lock)."""
        mine = [event for event in batch if event.key.startswith(self.prefix)]
        if mine:
            self._queue.put(mine)

    def fail(self, error: Exception) -> None:
        self._queue.put(error)

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        while (item := self._queue.get()) is not _END:
            if isinstance(item, Exception):
                self._store.forget(self)
                raise item
            assert isinstance(item, list)
            yield item

    def cancel(self) -> None:
        self._store.forget(self)
        self._queue.put(_END)


def _undo(keys: set[str], events: list[WatchEvent], created: frozenset[str]) -> None:
    """Turn `keys` (after `events`) into the keys before them: a deleted key was there, a created one was not."""
    for event in reversed(events):
        if event.kind == "delete":
            keys.add(event.key)
        elif event.key in created:
            keys.discard(event.key)


class MemoryStore:
    """A thread-safe `Store` held in memory (see the module docstring for its etcd-like rules)."""

    def __init__(self, clock: Clock | None = None, history: int = 10_000, name: str = "memory") -> None:
        self.name = name
        self._clock = clock or SystemClock()
        self._history_limit = history
        self._lock = threading.RLock()
        self._lease_ids = itertools.count(0x1000)
        self._generation = itertools.count(1)
        self._available = True
        self._watches: list[MemoryWatch] = []
        self._reset()

    def _reset(self) -> None:
        self._data: dict[str, KeyValue] = {}
        self._revision = 1
        self._compact_revision = 0
        # (revision, events, keys the change created): `count()` undoes changes to go back in time
        self._history: deque[tuple[int, list[WatchEvent], frozenset[str]]] = deque()
        self._leases: dict[int, _Lease] = {}
        self.cluster_id = f"{self.name}-{next(self._generation)}"

    # --- reads ----------------------------------------------------------------------------------

    def snapshot(self, prefix: str) -> Snapshot:
        with self._lock:
            self._check()
            items = tuple(kv for key, kv in sorted(self._data.items()) if key.startswith(prefix))
            return Snapshot(self._revision, items, self.cluster_id)

    def snapshot_pages(self, prefix: str) -> Iterator[Snapshot]:
        yield self.snapshot(prefix)  # one page

    def get(self, key: str) -> KeyValue | None:
        with self._lock:
            self._check()
            return self._data.get(key)

    def get_many(self, keys: Sequence[str]) -> list[KeyValue]:
        with self._lock:
            self._check()
            return [self._data[key] for key in keys if key in self._data]

    def lease_keys(self, lease: int) -> tuple[str, ...]:
        with self._lock:
            self._check()
            held = self._leases.get(lease)
            return tuple(sorted(held.keys)) if held else ()

    def count(self, prefix: str, revision: int = 0) -> int:
        """How many keys were under `prefix` at `revision` (0: now); `Compacted` when it is forgotten."""
        with self._lock:
            self._check()
            keys = {key for key in self._data if key.startswith(prefix)}
            if revision <= 0 or revision >= self._revision:
                return len(keys)
            if revision < self._compact_revision:
                raise Compacted(revision, self._compact_revision)
            for changed, events, created in reversed(self._history):
                if changed <= revision:
                    break
                _undo(keys, [e for e in events if e.key.startswith(prefix)], created)
            return len(keys)

    @property
    def revision(self) -> int:
        with self._lock:
            return self._revision

    def watch(self, prefix: str, start_revision: int) -> MemoryWatch:
        """Events under `prefix` from `start_revision` (0: from the next change on). Like every
        error of a watch, `Compacted` is raised by the iteration, not here."""
        with self._lock:
            self._check()
            if start_revision <= 0:
                start_revision = self._revision + 1
            watch = MemoryWatch(self, prefix)
            if start_revision < self._compact_revision:  # raised on iteration, as etcd does
                watch.fail(Compacted(start_revision, self._compact_revision))
                return watch
            for revision, batch, _ in self._history:
                if revision >= start_revision:
                    watch.offer(batch)
            self._watches.append(watch)
            return watch

    def forget(self, watch: MemoryWatch) -> None:
        """Stop feeding `watch` (it was cancelled or has failed)."""
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)

    # --- writes ---------------------------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.apply({key: value}, (), lease)

    def delete(self, key: str) -> bool:
        with self._lock:
            self._check()
            existed = key in self._data
            if existed:
                self._commit([self._delete_event(key)])
            return existed

    def apply(self, puts: Mapping[str, bytes], deletes: Iterable[str] = (), lease: int = 0) -> int:
        """Put and delete several keys as one change (one revision, one watch batch), like an etcd
        transaction. Returns the new revision (unchanged when nothing changed)."""
        with self._lock:
            self._check()
            if lease and lease not in self._leases:
                raise LeaseLost(f"{self.name}: lease {lease:x} not found")
            events = [self._delete_event(key) for key in deletes if key in self._data and key not in puts]
            created = frozenset(key for key in puts if key not in self._data)
            revision = self._revision + 1
            for key, value in puts.items():
                self._detach(key)
                self._data[key] = KeyValue(key, bytes(value), revision, lease)
                if lease:
                    self._leases[lease].keys.add(key)
                events.append(WatchEvent("put", key, bytes(value), revision))
            if events:
                self._commit(events, created)
            return self._revision

    def _delete_event(self, key: str) -> WatchEvent:
        self._detach(key)
        del self._data[key]
        return WatchEvent("delete", key, b"", self._revision + 1)

    def _detach(self, key: str) -> None:
        old = self._data.get(key)
        if old is not None and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)

    def _commit(self, events: list[WatchEvent], created: frozenset[str] = frozenset()) -> None:
        self._revision += 1
        self._history.append((self._revision, events, created))
        while len(self._history) > self._history_limit:
            self._history.popleft()
            self._compact_revision = self._history[0][0]
        for watch in self._watches:
            watch.offer(events)

    def compact(self, revision: int) -> None:
        """Forget history before `revision`: watches from an older revision raise `Compacted`."""
        with self._lock:
            self._compact_revision = max(self._compact_revision, min(revision, self._revision))
            while self._history and self._history[0][0] < self._compact_revision:
                self._history.popleft()

    # --- leases ---------------------------------------------------------------------------------

    def grant_lease(self, ttl: int) -> int:
        with self._lock:
            self._check()
            lease = next(self._lease_ids)
            self._leases[lease] = _Lease(ttl, self._clock.now() + ttl)
            return lease

    def keep_alive(self, lease: int) -> int:
        with self._lock:
            self._check()
            held = self._leases.get(lease)
            if held is None:
                raise LeaseLost(f"{self.name}: lease {lease:x} has expired or was revoked")
            held.deadline = self._clock.now() + held.ttl
            return held.ttl

    def revoke_lease(self, lease: int) -> None:
        with self._lock:
            self._check()
            self._revoke(lease)

    def _revoke(self, lease: int) -> None:
        held = self._leases.pop(lease, None)
        if held is not None and held.keys:
            self._commit([self._delete_event(key) for key in sorted(held.keys)])

    def expire_leases(self) -> None:
        """Revoke every lease whose TTL has run out by the clock's `now()`."""
        with self._lock:
            now = self._clock.now()
            for lease in [lease for lease, held in self._leases.items() if held.deadline <= now]:
                self._revoke(lease)

    # --- failure simulation ------------------------------------------------------------------------

    def _check(self) -> None:
        if not self._available:
            raise StoreUnavailable(f"{self.name}: unavailable")
        self.expire_leases()

    def set_available(self, available: bool) -> None:
        """Simulate an outage: while unavailable, calls raise and open watches fail."""
        with self._lock:
            self._available = available
            if not available:
                for watch in self._watches:
                    watch.fail(StoreUnavailable(f"{self.name}: watch {watch.prefix!r}: connection lost"))
                self._watches.clear()

    def wipe(self) -> None:
        """Lose everything, as an etcd restored from scratch: revision 1, a new cluster id."""
        with self._lock:
            self._reset()
            for watch in self._watches:
                watch.fail(StoreUnavailable(f"{self.name}: watch {watch.prefix!r}: connection lost"))
            self._watches.clear()

    def close(self) -> None:
        with self._lock:
            for watch in list(self._watches):
                watch.cancel()
