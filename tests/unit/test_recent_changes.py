"""The dashboard's recent changes: exact from watch events, recovered by comparing snapshots
after an outage, newest first and bounded."""

from __future__ import annotations

from lbgen.core.recent_changes import MAX_KEY, Change, between, change_dict, from_events, remember
from lbgen.core.values import KeyValue, Snapshot, WatchEvent


def snap(revision: int, *items: tuple[str, int]) -> Snapshot:
    return Snapshot(revision, tuple(KeyValue(key, b"v", rev) for key, rev in items))


def test_each_watch_event_is_a_change_at_its_revision() -> None:
    events = [WatchEvent("put", "/p/a", b"1", 5), WatchEvent("delete", "/p/b", b"", 6)]
    assert from_events(events, 100.0) == [Change("/p/a", "put", 5, 100.0), Change("/p/b", "delete", 6, 100.0)]


def test_between_two_snapshots_finds_puts_and_deletes_oldest_first() -> None:
    old = snap(10, ("/p/same", 3), ("/p/changed", 4), ("/p/gone", 5))
    new = snap(20, ("/p/same", 3), ("/p/changed", 15), ("/p/new", 12))
    assert between(old, new, 7.0) == [
        Change("/p/new", "put", 12, 7.0), Change("/p/changed", "put", 15, 7.0), Change("/p/gone", "delete", 20, 7.0)]


def test_the_first_snapshot_seeds_the_list_without_a_time() -> None:
    assert between(Snapshot(0, ()), snap(9, ("/p/b", 8), ("/p/a", 2)), None) == [
        Change("/p/a", "put", 2, None), Change("/p/b", "put", 8, None)]


def test_remember_keeps_the_newest_first_and_bounded() -> None:
    recent = remember((), [Change(f"/k{n}", "put", n, 0.0) for n in range(1, 4)], limit=5)
    recent = remember(recent, [Change("/k4", "put", 4, 0.0), Change("/k5", "delete", 5, 0.0)], limit=4)
    assert [c.revision for c in recent] == [5, 4, 3, 2]


def test_a_long_key_is_cut_and_times_are_rounded() -> None:
    [change] = from_events([WatchEvent("put", "/p/" + "x" * 1000, b"", 1)], 1.23456)
    assert len(change.key) == MAX_KEY
    assert change_dict(change)["time"] == 1.235
    assert change_dict(Change("/k", "put", 1, None))["time"] is None
