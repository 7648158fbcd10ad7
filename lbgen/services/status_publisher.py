"""Publishes an LB node's status under `{prefix}/lb/{node}`, on a lease (issue 6, docs/operations.md).

The watcher's consumer hands every status snapshot to `StatusPublisher.update`, which only stores
it and wakes the publisher thread: a slow or absent etcd never delays a render. The publisher
thread does every registry call and drives the lease (`lease_keeper`): it writes the value when it differs from the
last one written — at once for the first write and when a problem, an LB's state or a quarantine
changes, otherwise at most once per `min_interval` (issue 13: a watcher applying 10 changes a second
wrote 10 status revisions a second, each one sent to every dashboard and stored by etcd until
compaction); the latest status is always written in the end. It refreshes the lease every TTL/3,
retries with a capped backoff while etcd is away, and when the lease is lost (etcd away longer
than the TTL) takes a new one and writes again.
The key hangs on the lease, so a node that dies leaves no stale status behind; `stop()` revokes it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Sequence

from msgspec.structs import replace

from lbgen import __version__
from lbgen.core.backoff import backoff
from lbgen.core.lb_node_status import LbStatus, TargetStatus, applied_revision, encode_lb_status
from lbgen.core.schema import lb_status_key
from lbgen.errors import LeaseLost, StoreError
from lbgen.ports import Store
from lbgen.services.lease_keeper import LeaseKeeper
from lbgen.services.watcher import WatcherStatus

log = logging.getLogger(__name__)


class StatusPublisher:
    """Keeps `{prefix}/lb/{node}` equal to the latest `WatcherStatus` of the node's `targets`."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        node: str,
        targets: Sequence[str],
        ttl: int = 15,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        retry: Callable[[int], float] = lambda attempt: backoff(attempt, random.random(), 0.2, 5.0),
        min_interval: float = 1.0,
    ) -> None:
        self.key = lb_status_key(prefix, node)
        self._store, self._node, self._wall, self._retry = store, node, wall, retry
        self._keeper = LeaseKeeper(store, ttl, self.key, clock)
        self._min_interval, self._clock = min_interval, clock
        self._targets = {name: TargetStatus() for name in targets}
        self._latest = WatcherStatus()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Owned by the publisher thread.
        self._written: LbStatus | None = None
        self._written_at = 0.0

    def update(self, status: WatcherStatus) -> None:
        """The watcher's hook: remember `status` and wake the publisher. Never blocks on etcd."""
        with self._lock:
            self._latest = status
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lb-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread, write a status still held back by the rate limit (a reader following
        the key sees the last applied revision), then revoke the lease: the status disappears."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._keeper.lease and (self._thread is None or not self._thread.is_alive()):
            try:
                if (status := self._current()) != self._written:
                    self._write(status)
            except StoreError as e:
                log.debug("%s: final status not written: %s", self.key, e)
        try:
            self._keeper.revoke()
        except StoreError as e:
            log.warning("could not revoke lease %x (%s expires within %ss): %s", self._keeper.lease, self.key,
                        self._keeper.ttl, e)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                wait = self.step()
            except LeaseLost as e:
                log.warning("%s: %s; taking a new lease and publishing again", self.key, e)
                self._keeper.drop()
                continue
            except StoreError as e:
                log.log(logging.WARNING if failures == 0 else logging.DEBUG, "publishing %s: %s; retrying", self.key, e)
                self._stopping.wait(self._retry(failures))
                failures += 1
                continue
            if failures:
                log.info("%s published again after %d failed attempts", self.key, failures)
            failures = 0
            self._wake.wait(wait)
            self._wake.clear()

    def step(self) -> float:
        """One round of the publisher thread: grant a lease if there is none, write a changed
        status when it is due, keep the lease alive when due; returns how long to sleep until the
        next of these. Tests drive it with an injected clock."""
        now = self._clock()
        if not self._keeper.lease:
            self._keeper.grant()
            self._written = None
        wait = self._keeper.tick()
        status = self._current()
        if status == self._written:
            return wait
        held_until = self._written_at + self._min_interval
        if self._written is None or now >= held_until or _urgent(self._written, status):
            self._write(status)
            self._written_at = now
            return wait
        return min(wait, held_until - now)

    def _write(self, status: LbStatus) -> None:
        revision = self._store.put(self.key, encode_lb_status(replace(status, updated_at=self._wall())),
                                   lease=self._keeper.lease)
        self._written = status
        log.debug("%s: published at revision %s (applied revision %s)", self.key, revision, status.revision)

    def _current(self) -> LbStatus:
        """The status to publish, from the latest watcher status; a target's `applied_at` moves
        when its applied revision does."""
        with self._lock:
            latest = self._latest
        for name, old in self._targets.items():
            revision = latest.applied.get(name, 0)
            applied_at = self._wall() if revision != old.revision else old.applied_at
            error = latest.errors.get(name) or latest.held.get(name, "")
            self._targets[name] = TargetStatus(revision, error, applied_at, up=name not in latest.down,
                                               quarantined=dict(latest.quarantined.get(name, {})),
                                               runtime_updates=latest.runtime_updates.get(name, 0),
                                               runtime_fallbacks=latest.runtime_fallbacks.get(name, 0))
        return LbStatus(
            node=self._node,
            revision=applied_revision(self._targets),
            targets=dict(self._targets),
            connected=latest.connected,
            error="" if latest.connected else latest.last_error,
            version=__version__,
        )


def _urgent(old: LbStatus, new: LbStatus) -> bool:
    """Whether `new` differs from `old` in more than applied revisions and times: a registry
    connection, an error, an LB up or down, a quarantine — what an operator acts on is not held back."""
    if (old.connected, old.error, old.targets.keys()) != (new.connected, new.error, new.targets.keys()):
        return True
    return any((t.error, t.up, t.quarantined) != (new.targets[n].error, new.targets[n].up, new.targets[n].quarantined)
               for n, t in old.targets.items())
