"""The dashboard's view of the registry: follow the whole prefix, recompute, publish.

One follower thread: snapshot the prefix (services, LB nodes' status, drain markers), watch it
from the snapshot's revision + 1, and after each batch of events read a new snapshot and publish
the `lbgen status --json` document built from it. Events trigger, state is recomputed: a watch
event carries no lease, and the document must be exactly what `lbgen status` would print. Events
at or below the last snapshot's revision only join the recent changes (they are in it already).

When the registry fails, the feed publishes "disconnected", retries with a capped backoff and,
once a snapshot succeeds again, publishes "connected" with the changes it missed meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

from lbgen.core.backoff import backoff
from lbgen.core.overview import build_overview, status_document
from lbgen.core.recent_changes import Change, between, change_dict, from_events, remember
from lbgen.core.schema import registry_root
from lbgen.errors import Compacted, StoreError
from lbgen.core.values import Snapshot, WatchEvent
from lbgen.ports import Store, Watch
from lbgen.services.dashboard.hub import Hub

log = logging.getLogger(__name__)

RECENT_CHANGES = 100
_EMPTY = Snapshot(0, ())


class FleetFeed:
    """Follows `prefix` in `store` and publishes into `hub`; readable from any thread."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        registry: str,
        hub: Hub,
        expect_lbs: bool = True,
        wall: Callable[[], float] = time.time,
        retry: Callable[[int], float] = lambda attempt: backoff(attempt, random.random()),
        recent_limit: int = RECENT_CHANGES,
    ) -> None:
        self._store, self._prefix, self._registry, self._hub = store, prefix, registry, hub
        self._expect_lbs, self._wall, self._retry, self._limit = expect_lbs, wall, retry, recent_limit
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._publishing = threading.Lock()  # the follower and `refresh()` both publish the document
        self._watch: Watch | None = None
        self._snapshot: Snapshot | None = None
        self._recent: tuple[Change, ...] = ()
        self._connected = False
        self._error = "not connected yet"
        self._since: float | None = None

    # --- what routes read ---------------------------------------------------------------------

    def document(self) -> dict[str, Any] | None:
        """`lbgen status --json` of the last snapshot, ages as of now; None before the first one."""
        with self._lock:
            snapshot = self._snapshot
        if snapshot is None:
            return None
        overview = build_overview(self._prefix, snapshot, expect_lbs=self._expect_lbs)
        return status_document(self._registry, overview, self._wall())

    def changes(self) -> list[dict[str, Any]]:
        """The recent changes, newest first."""
        with self._lock:
            return [change_dict(c) for c in self._recent]

    def connection(self) -> dict[str, Any]:
        """Whether the registry is reachable; the error and since when (wall clock) when not."""
        with self._lock:
            revision = self._snapshot.revision if self._snapshot else 0
            return {"connected": self._connected, "error": self._error, "since": self._since, "revision": revision}

    def problems(self) -> list[str]:
        """For `/healthz`: the registry connection's error, if any."""
        with self._lock:
            return [] if self._connected else [f"registry: {self._error}"]

    def refresh(self) -> None:
        """Publish the document again: ages (seconds since an LB node reported) keep counting."""
        self._publish_status()

    # --- the follower -------------------------------------------------------------------------

    def run(self) -> None:
        """Follow the registry until `stop()`: snapshot, watch, and after any failure retry."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._load(self._store.snapshot(registry_root(self._prefix)))
                attempt = 0
                self._follow()
            except Compacted as e:
                log.warning("registry: %s", e)
            except StoreError as e:
                if self._stopping.is_set():
                    return
                self._lost(str(e))
                self._stopping.wait(self._retry(attempt))
                attempt += 1

    def stop(self) -> None:
        """End `run()` soon; safe from any thread."""
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.cancel()

    def _follow(self) -> None:
        assert self._snapshot is not None
        self._watch = watch = self._store.watch(registry_root(self._prefix), self._snapshot.revision + 1)
        try:
            if not self._stopping.is_set():
                for events in watch:
                    self._changed(events)
        finally:
            watch.cancel()
        if not self._stopping.is_set():
            raise StoreError("watch ended unexpectedly")

    def _changed(self, events: list[WatchEvent]) -> None:
        self._remember(from_events(events, self._wall()))
        with self._lock:
            seen = self._snapshot.revision if self._snapshot else 0
        if max(e.revision for e in events) > seen:
            snapshot = self._store.snapshot(registry_root(self._prefix))
            with self._lock:
                self._snapshot = snapshot
            self._publish_status()

    def _load(self, snapshot: Snapshot) -> None:
        """A full snapshot: at start (its keys, by revision, seed the recent changes) or after a break."""
        with self._lock:
            before, self._snapshot = self._snapshot, snapshot
            self._connected, self._error, self._since = True, "", None
        log.info("registry: snapshot at revision %s, %s keys", snapshot.revision, len(snapshot.items))
        self._remember(between(before or _EMPTY, snapshot, self._wall() if before else None))
        self._publish_status()
        self._hub.publish("connection", "connected", self.connection())

    def _lost(self, error: str) -> None:
        with self._lock:
            was_connected = self._connected or self._since is None
            self._connected, self._error = False, error
            self._since = self._wall() if was_connected else self._since
        if was_connected:
            log.error("registry unreachable, showing revision %s: %s", self.connection()["revision"], error)
        self._hub.publish("connection", "disconnected", self.connection())

    def _remember(self, changes: list[Change]) -> None:
        if not changes:
            return
        with self._lock:
            self._recent = remember(self._recent, changes, self._limit)
        self._hub.publish("changes", "changes", self.changes())

    def _publish_status(self) -> None:
        """Built and sent under one lock: a document of an older snapshot never follows a newer one."""
        with self._publishing:
            document = self.document()
            if document is not None:
                self._hub.publish("status", "status", document)
