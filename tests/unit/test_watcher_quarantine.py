"""The watcher quarantines the services the LB's checker refuses (issue 10 part 3), with a fake checker.

The same stories run against real etcd, nginx and HAProxy in tests/integration/test_quarantine.py.
"""

from __future__ import annotations

import logging

import pytest

from lbgen.adapters.memory_store import MemoryStore
from tests.unit.test_watcher import RecordingApplier, applier, endpoint, key, start_watcher, store, wait_for  # noqa: F401 (fixtures)

BAD = 666  # a port the fake checker refuses, standing for `no-such-host.invalid`


def quarantine_lines(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"{word} " in r.getMessage() and "service" in r.getMessage()]


def test_a_refused_service_is_held_and_the_others_go_live(
        store: MemoryStore, applier: RecordingApplier, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    applier.refused = {str(BAD)}
    store.put(key("web", "a"), endpoint(1))
    store.put(key("api", "x"), endpoint(9))
    for watcher in start_watcher(store, applier):
        wait_for(lambda: applier.live.get("lb") == "api=9,;web=1,;")
        store.put(key("web", "bad"), endpoint(BAD))
        wait_for(lambda: "lb" in watcher.status.quarantined)
        assert applier.live["lb"] == "api=9,;web=1,;", "web stays at its last applied state"
        assert "refused 666" in watcher.status.quarantined["lb"]["web"]
        assert watcher.status.errors == {}
        store.put(key("api", "y"), endpoint(10))
        wait_for(lambda: applier.live["lb"] == "api=9,10,;web=1,;")
        sample = watcher.metrics.registry.get_sample_value
        assert sample("lbgen_watcher_quarantined_services", {"target": "lb"}) == 1
        assert sample("lbgen_watcher_quarantined_service", {"target": "lb", "service": "web"}) == 1
        store.delete(key("web", "bad"))
        store.put(key("web", "b"), endpoint(2))
        wait_for(lambda: applier.live["lb"] == "api=9,10,;web=1,2,;")
        wait_for(lambda: watcher.status.quarantined == {})
        assert sample("lbgen_watcher_quarantined_services", {"target": "lb"}) == 0
        assert sample("lbgen_watcher_quarantined_service", {"target": "lb", "service": "web"}) is None
    started, released = quarantine_lines(caplog, "quarantined at"), quarantine_lines(caplog, "released")
    assert len(started) == 1 and "lb: service web" in started[0] and "refused 666" in started[0], started
    assert len(released) == 1 and "lb: service web" in released[0], released


def test_a_new_refused_service_is_held_as_absent(store: MemoryStore, applier: RecordingApplier) -> None:
    applier.refused = {str(BAD)}
    store.put(key("web", "a"), endpoint(1))
    for watcher in start_watcher(store, applier):
        wait_for(lambda: applier.live.get("lb") == "web=1,;")
        store.put(key("new", "bad"), endpoint(BAD))
        store.put(key("web", "b"), endpoint(2))
        wait_for(lambda: applier.live["lb"] == "web=1,2,;")
        # the applier's fake goes live first; the consumer records the quarantine right after
        wait_for(lambda: list(watcher.status.quarantined.get("lb", {})) == ["new"])


def test_a_suspect_still_bad_costs_one_probe_per_pass(store: MemoryStore, applier: RecordingApplier) -> None:
    applier.refused = {str(BAD)}
    for name in "abcdefghij":
        store.put(key(name, "e"), endpoint(1))
    for watcher in start_watcher(store, applier):
        wait_for(lambda: "lb" in applier.live)
        store.put(key("f", "bad"), endpoint(BAD))
        wait_for(lambda: "lb" in watcher.status.quarantined)
        probes = applier.probes
        store.put(key("a", "e2"), endpoint(2))
        wait_for(lambda: "a=1,2," in applier.live["lb"])
        assert applier.probes == probes + 1
        assert list(watcher.status.quarantined["lb"]) == ["f"]


def test_a_refusal_tied_to_no_service_keeps_the_whole_last_good_config(
        store: MemoryStore, applier: RecordingApplier) -> None:
    store.put(key("web", "a"), endpoint(1))
    for watcher in start_watcher(store, applier):
        wait_for(lambda: applier.live.get("lb") == "web=1,;")
        applier.failing = "[emerg] unknown directive in the template"
        store.put(key("web", "b"), endpoint(2))
        wait_for(lambda: "unknown directive" in watcher.status.errors.get("lb", ""))
        assert applier.live["lb"] == "web=1,;"
        assert watcher.status.quarantined == {}
        applier.failing = ""
        wait_for(lambda: applier.live["lb"] == "web=1,2,;")


def test_a_value_that_heals_without_a_registry_change_is_released_at_the_next_recheck(
        store: MemoryStore, applier: RecordingApplier) -> None:
    applier.refused = {str(BAD)}  # say, a host name that does not resolve yet
    store.put(key("web", "a"), endpoint(1))
    for watcher in start_watcher(store, applier, recheck=0.05):
        wait_for(lambda: applier.live.get("lb") == "web=1,;")
        store.put(key("web", "late"), endpoint(BAD))
        wait_for(lambda: "lb" in watcher.status.quarantined)
        revision = store.revision
        applier.refused = set()  # its DNS record appears: no registry change
        wait_for(lambda: watcher.status.quarantined == {})
        assert applier.live["lb"] == f"web=1,{BAD},;" and store.revision == revision
