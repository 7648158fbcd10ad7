"""The drop guard in the watcher (issue 10.6): a hold per target with its own timer, holding only
the services that dropped, a deleted spec applied at once, one WARNING at each end of a hold, and
a baseline that survives a restart."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from lbgen.adapters.applied_state import AppliedStateFiles, state_path
from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.applied_state import decode_applied, encode_applied
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.render import InProcessRenderer
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


class RecordingRenderer(InProcessRenderer):
    """Renders in process, keeping each catalog it rendered; `started` once the first began."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[Catalog] = []
        self.started = threading.Event()

    def render(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str]) -> str:
        self.started.set()
        self.rendered.append(catalog)
        return super().render(source, catalog, target, served_health)


class LoadingStates(MemoryStates):
    """Reading the baseline ends once a render has begun (or after 5 s): whether one began meanwhile."""

    def __init__(self, saved: dict[str, Catalog], renderer: RecordingRenderer) -> None:
        super().__init__(saved)
        self.renderer, self.overlapped = renderer, False

    def load(self, target: Target, current: Catalog | None = None) -> Catalog | None:
        self.overlapped = self.renderer.started.wait(5)
        return super().load(target, current)


@pytest.mark.parametrize("agents_down", [False, True])
def test_a_restarted_watcher_renders_while_it_reads_its_baseline(
        agents_down: bool, store: MemoryStore, applier: RecordingApplier) -> None:
    """Issue 13: the first render after a restart does not wait for the applied state to be read.
    It is applied when the guard holds nothing; when the guard holds a service (the agents are
    down: web has no endpoint), the held catalog is rendered and applied instead."""
    renderer = RecordingRenderer()
    states = LoadingStates({"lb": Catalog(7, (served("web", 2),))}, renderer)
    store.put(spec("web"), b'{"listen": 80}')
    store.put(*((key("api", "a"), endpoint(1)) if agents_down else (key("web", "web2"), endpoint(2))))
    expected = "api=1,;web=2,;" if agents_down else "web=2,;"
    for watcher in start_watcher(store, applier, guard=GUARD, states=states, renderer=renderer):
        wait_for(lambda: applier.last == expected)
        assert states.overlapped
        assert {p["lb"] for p in applier.passes} == {expected}  # the render ahead, without web, never applied
        assert [c.service("web") for c in renderer.rendered] == (
            [Service("web", {"listen": 80}), served("web", 2)] if agents_down else [served("web", 2)])
        assert ("lb" in watcher.status.held) is agents_down


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
