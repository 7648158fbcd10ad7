"""The dashboard's "recent changes": the last N registry keys that changed, newest first.

Watch events give each change its exact revision. Changes missed while the registry was out of
reach are recovered by comparing the snapshot before the outage with the one after it: a key whose
revision moved was put, a key that vanished was deleted (at some revision up to the new snapshot's).
`time` is the dashboard's wall clock when it learnt of the change (etcd keeps no times); None for
the keys of the first snapshot, which seed the list by their revisions: changed before it started.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import msgspec

from lbgen.core.values import Snapshot, WatchEvent

MAX_KEY = 200  # characters of a key kept for display: keys are whatever a client wrote


class Change(msgspec.Struct, frozen=True):
    key: str
    kind: str  # "put" | "delete"
    revision: int
    time: float | None


def from_events(events: Iterable[WatchEvent], now: float) -> list[Change]:
    """One change per watch event, in the order they happened."""
    return [Change(e.key[:MAX_KEY], e.kind, e.revision, now) for e in events]


def between(old: Snapshot, new: Snapshot, now: float | None) -> list[Change]:
    """What changed from `old` to `new` (both of the same prefix), oldest first."""
    before = {kv.key: kv.mod_revision for kv in old.items}
    after = {kv.key: kv.mod_revision for kv in new.items}
    puts = [Change(key[:MAX_KEY], "put", rev, now) for key, rev in after.items() if before.get(key) != rev]
    deletes = [Change(key[:MAX_KEY], "delete", new.revision, now) for key in before.keys() - after.keys()]
    return sorted(puts + deletes, key=lambda c: (c.revision, c.key))


def remember(recent: Sequence[Change], new: Sequence[Change], limit: int) -> tuple[Change, ...]:
    """`recent` (newest first) with `new` (oldest first) added, keeping the newest `limit`."""
    return (tuple(reversed(new)) + tuple(recent))[:limit]


def change_dict(change: Change) -> dict[str, Any]:
    time = None if change.time is None else round(change.time, 3)
    return {"key": change.key, "kind": change.kind, "revision": change.revision, "time": time}
