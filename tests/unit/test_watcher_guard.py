"""The drop guard in the watcher (issue 10.6): a hold per target with its own timer, holding only
the services that dropped, a deleted spec applied at once, one WARNING at each end of a hold, and
a baseline that survives a restart."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lbgen.adapters.applied_state import AppliedStateFiles, state_path
from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.applied_state import decode_applied, encode_applied
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.settings import Guard, Target
from lbgen.services.drop_hold import DropHolds
from tests.unit.test_watcher import P, RecordingApplier, endpoint, key, start_watcher, wait_for
from tests.unit.test_watcher import applier, store  # noqa: F401  (fixtures)

GUARD = Guard(max_drop=0.5, to_zero=True, hold_max=60)


def spec(service: str) -> str:
    return f"{P}/services/{service}/spec"


def served(name: str, *ports: int) -> Service:
    return Service(name, {"listen": 80}, tuple(Endpoint(f"{name}{p}", "127.0.0.1", p) for p in ports))


def test_each_target_has_its_own_hold_timer() -> None:
    holds = DropHolds(GUARD, DEFAULT_SERVED_HEALTH)
    before, dropped = Catalog(1, (served("web", 1),)), Catalog(2, (Service("web", {"listen": 80}),))
    assert holds.catalog_for("a", before, dropped, now=0) == Catalog(2, (served("web", 1),))
    assert holds.catalog_for("b", before, before, now=30) == before, "b applies; a's timer must not move"
    assert holds.catalog_for("b", before, dropped, now=40).service("web") == served("web", 1)
    assert holds.catalog_for("a", before, dropped, now=59.9).service("web") == served("web", 1)
    assert holds.catalog_for("a", before, dropped, now=60) == dropped, "a's hold_max is up"
    assert holds.catalog_for("b", before, dropped, now=99).service("web") == served("web", 1), "b started at 40"
    assert holds.expiries() == {"b": 100}


def test_a_hold_keeps_only_the_drop_and_logs_one_warning_at_each_end(
        store: MemoryStore, applier: RecordingApplier, caplog: pytest.LogCaptureFixture) -> None:
    store.put(key("api", "a"), endpoint(1))
    store.put(key("web", "a"), endpoint(2))
    for watcher in start_watcher(store, applier, guard=GUARD):
        wait_for(lambda: applier.last == "api=1,;web=2,;")
        store.delete(key("api", "a"))
        wait_for(lambda: "lb" in watcher.status.held)
        for port in (3, 4, 5):
            store.put(key("web", "b"), endpoint(port))
            wait_for(lambda: applier.last == f"api=1,;web=2,{port},;")
        wait_for(lambda: watcher.status.applied["lb"] == store.revision)
        assert watcher.status.held["lb"].startswith("drop guard holds api: ") and watcher.status.errors == {}
        sample = watcher.metrics.registry.get_sample_value
        assert sample("lbgen_watcher_guard_held_services", {"target": "lb"}) == 1
        store.put(key("api", "b"), endpoint(6))
        wait_for(lambda: applier.last == "api=6,;web=2,5,;" and "lb" not in watcher.status.held)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "holding api at the last applied state" in warnings[0] and "hold ended" in warnings[1]


def test_a_service_whose_spec_is_deleted_is_gone_at_once(store: MemoryStore, applier: RecordingApplier) -> None:
    for name, port in (("api", 1), ("web", 2)):
        store.put(spec(name), b'{"listen": 80}')
        store.put(key(name, "a"), endpoint(port))
    for watcher in start_watcher(store, applier, guard=GUARD):
        wait_for(lambda: applier.last == "api=1,;web=2,;")
        store.delete(spec("api"))
        store.delete(key("api", "a"))
        wait_for(lambda: applier.last == "web=2,;")
        assert watcher.status.held == {}


class MemoryStates:
    def __init__(self, saved: dict[str, Catalog]) -> None:
        self.saved = saved

    def load(self, target: Target, current: Catalog | None = None) -> Catalog | None:
        return self.saved.get(target.name)

    def save(self, target: Target, catalog: Catalog) -> None:
        self.saved[target.name] = catalog


def test_a_restarted_watcher_compares_with_what_was_last_applied(
        store: MemoryStore, applier: RecordingApplier) -> None:
    """The agents are down while the watcher restarts: web has no endpoint in the registry."""
    states = MemoryStates({"lb": Catalog(7, (served("web", 2),))})
    store.put(spec("web"), b'{"listen": 80}')
    store.put(key("api", "a"), endpoint(1))
    for watcher in start_watcher(store, applier, guard=GUARD, states=states):
        wait_for(lambda: applier.last == "api=1,;web=2,;")
        assert "drop guard holds web" in watcher.status.held["lb"]
        wait_for(lambda: states.saved["lb"].revision == store.revision)
        assert states.saved["lb"].service("web") == served("web", 2), "the held service stays the baseline"


def test_a_state_file_holding_the_current_catalog_is_not_decoded_another_one_is(tmp_path: Path) -> None:
    """A one-shot render of an unchanged registry reads its state back as the catalog it has; a
    file that differs (or a bad one) is decoded as before, whatever `current` is."""
    target = Target(name="lb", template="t", dest=str(tmp_path / "lb.conf"))
    files, catalog = AppliedStateFiles(), Catalog(9, (Service("api"), served("web", 1, 2)))
    files.save(target, catalog)
    same = Catalog(9, (Service("api"), served("web", 1, 2)))
    assert AppliedStateFiles().load(target, same) is same
    newer = Catalog(10, (Service("api"), served("web", 1)))
    loaded = AppliedStateFiles().load(target, newer)
    assert loaded == catalog and loaded is not newer
    state_path(tmp_path / "lb.conf").write_text(json.dumps({"format": 1, "revision": 1, "services": {
        "web": {"endpoints": {"e": {"address": "1.2.3.4;evil", "port": 80}}}}}))
    assert AppliedStateFiles().load(target, same) is None


def test_the_applied_state_file_round_trips_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    target = Target(name="lb", template="t", dest=str(tmp_path / "lb.conf"))
    files, catalog = AppliedStateFiles(), Catalog(9, (Service("api"), served("web", 1, 2)))
    assert files.load(target) is None
    files.save(target, catalog)
    assert files.load(target) == catalog == decode_applied(encode_applied(catalog))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lb.conf.applied.json"]
    state_path(tmp_path / "lb.conf").write_text(json.dumps({"format": 1, "revision": 1, "services": {
        "web": {"endpoints": {"e": {"address": "1.2.3.4;evil", "port": 80}}}}}))
    assert files.load(target) is None
