"""One registry lease, granted on demand, kept alive every TTL/3 and revoked at stop (issue 11).

The agent and the LB status publisher both hang their keys on a lease. The owner grants it when
it first writes, drops it when the registry says it is lost (`LeaseLost` from a keep-alive or a
write: etcd was away longer than the TTL) and grants a new one on its next write, and revokes it
on a clean stop, which deletes every key on it at once. Keep-alives come either from the owner's
own loop (`tick`, which says how long until the next one is due: the status publisher) or from a
thread of the keeper's own (`start`: the agent, whose consumer may block on Docker), which reports
through callbacks and never drops the lease itself: the owner's loop owns it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from lbgen.errors import LeaseLost, StoreError
from lbgen.ports import Store

log = logging.getLogger(__name__)


def _ignore(*_: object) -> None:
    """The default callback: nothing to report to."""


class LeaseKeeper:
    """Holds at most one lease of `ttl` seconds on `store`; `lease` is 0 while none is held."""

    def __init__(self, store: Store, ttl: int, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.interval = ttl, ttl / 3
        self._store, self._name, self._clock = store, name, clock
        self._lock = threading.Lock()
        self._lease = 0
        self._kept_at = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lease(self) -> int:
        return self._lease

    def grant(self) -> int:
        """A new lease, replacing the one held (if any); the first keep-alive is due TTL/3 later."""
        lease = self._store.grant_lease(self.ttl)
        with self._lock:
            self._lease, self._kept_at = lease, self._clock()
        log.info("%s: granted lease %x (TTL %ss)", self._name, lease, self.ttl)
        return lease

    def drop(self) -> None:
        """Forget a lost lease; the owner's next `grant` replaces it."""
        with self._lock:
            self._lease = 0

    def due_in(self) -> float:
        """Seconds until the next keep-alive is due (TTL/3 while no lease is held)."""
        with self._lock:
            lease, kept_at = self._lease, self._kept_at
        return max(0.0, kept_at + self.interval - self._clock()) if lease else self.interval

    def _keep(self, lease: int) -> None:
        """Refresh `lease` now. Raises `LeaseLost` (the lease stays held until the owner drops
        it) or `StoreError`."""
        now = self._clock()
        self._store.keep_alive(lease)
        with self._lock:
            if self._lease == lease:
                self._kept_at = now

    def tick(self) -> float:
        """For an owner's loop: keep the lease alive when due; the seconds until the next is due."""
        if (lease := self._lease) and self.due_in() == 0:
            self._keep(lease)
        return self.due_in()

    def revoke(self) -> int:
        """Revoke the lease held (its keys go in one revision); the lease revoked, 0 when none was.

        Raises `StoreError`: the keys then expire within the TTL."""
        lease = self._lease
        if lease:
            self._store.revoke_lease(lease)
            self.drop()
        return lease

    def start(
        self,
        thread_name: str,
        on_lost: Callable[[int], None] = _ignore,
        on_error: Callable[[StoreError], None] = _ignore,
        on_kept: Callable[[], None] = _ignore,
    ) -> None:
        """Keep the lease alive on a thread of its own until `stop`: `on_lost(lease)` when the
        registry lost it, `on_error` when a keep-alive failed (retried TTL/3 later), `on_kept`
        after each keep-alive that succeeded."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(on_lost, on_error, on_kept),
                                        name=thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the keep-alive thread (the lease stays held: revoking it is the owner's choice)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, on_lost: Callable[[int], None], on_error: Callable[[StoreError], None],
             on_kept: Callable[[], None]) -> None:
        failing, wait = 0, self.interval
        while not self._stopping.wait(wait):
            lease, wait = self._lease, self.due_in()
            if not lease or wait > 0:
                continue
            wait = self.interval
            try:
                self._keep(lease)
            except LeaseLost:
                on_lost(lease)
                continue
            except StoreError as e:
                log.log(logging.WARNING if failing == 0 else logging.DEBUG, "%s: %s", self._name, e)
                failing += 1
                on_error(e)
                continue
            if failing:
                log.info("%s: lease %x kept alive again after %d failed keep-alives", self._name, lease, failing)
            failing, wait = 0, self.due_in()
            on_kept()
