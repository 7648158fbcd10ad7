"""The watcher loop against the in-memory store and a recording applier.

Each test tells one of the stories that hurt users of confd and consul-template (their issue
trackers) and checks lbgen does the right thing: no render before a complete snapshot, one apply per burst, the
last config kept through an outage, a drop held by the guard, failures retried.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.adapters.process import SystemClock
from lbgen.core.registry_url import RegistryUrl
from lbgen.core.values import Snapshot
from lbgen.core.settings import GUARD_OFF, Guard, Settings, Target, Wait
from lbgen.errors import ApplyError
from lbgen.services.applier import TargetResult
from lbgen.services.watcher import Watcher

P = "/lbgen"
REGISTRY = RegistryUrl("file", path="/unused")  # the store is injected; the URL is not used
TEMPLATE = "{% for s in services %}{{ s.name }}={% for e in s.endpoints %}{{ e.port }},{% endfor %};{% endfor %}"


class RecordingApplier:
    """Records every pass; every check fails while `failing` is set, and a text containing one of
    `refused` fails it (a value the LB's checker refuses); `live` holds what passed, per target."""

    def __init__(self) -> None:
        self.passes: list[dict[str, str]] = []
        self.failing = ""
        self.refused: set[str] = set()
        self.live: dict[str, str] = {}
        self.probes = 0

    def apply(self, targets: Sequence[Target], rendered: Mapping[str, str]) -> list[TargetResult]:
        self.passes.append(dict(rendered))
        results = []
        for name, text in rendered.items():
            refusal = self._refusal(text)
            if refusal:
                results.append(TargetResult(name, step="check", error=refusal))
            else:
                self.live[name] = text
                results.append(TargetResult(name, changed=True, wrote=True))
        return results

    def check_text(self, target: Target, text: str) -> ApplyError | None:
        self.probes += 1
        refusal = self._refusal(text)
        return ApplyError(refusal) if refusal else None

    def _refusal(self, text: str) -> str:
        if self.failing:
            return self.failing
        return next((f"[emerg] refused {word}" for word in sorted(self.refused) if word in text), "")

    def lane_key(self, target: Target) -> str:
        return target.name

    @property
    def last(self) -> str:
        return self.passes[-1]["lb"] if self.passes else ""


def endpoint(port: int) -> bytes:
    return json.dumps({"address": "127.0.0.1", "port": port}).encode()


def key(service: str, eid: str) -> str:
    return f"{P}/services/{service}/endpoints/{eid}"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.1fs" % timeout)
        time.sleep(0.005)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def applier() -> RecordingApplier:
    return RecordingApplier()


def start_watcher(store: MemoryStore, applier: RecordingApplier, guard: Guard = GUARD_OFF,
                  template: Callable[[str], str] = lambda _: TEMPLATE, wait: Wait = Wait(0.02, 0.2),
                  names: Sequence[str] = ("lb",), states: object = None, recheck: float = 60.0,
                  renderer: object = None) -> Iterator[Watcher]:
    """A running watcher over `store` with one target per name (the fake applier ignores dest)."""
    targets = tuple(Target(name=name, template="lb.j2", dest="/unused") for name in names)
    settings = Settings(registry=REGISTRY, prefix=P, wait=wait, guard=guard, targets=targets)
    watcher = Watcher(settings, store, applier, SystemClock(), read_template=template,  # type: ignore[arg-type]
                      retry_base=0.01, retry_cap=0.05, states=states, recheck=recheck,
                      renderer=renderer)  # type: ignore[arg-type]
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        watcher.stop()
        thread.join(timeout=5)
        assert not thread.is_alive(), "watcher did not stop"


@pytest.fixture
def watcher(store: MemoryStore, applier: RecordingApplier) -> Iterator[Watcher]:
    yield from start_watcher(store, applier)


def test_renders_the_snapshot_then_follows_changes(store: MemoryStore, applier: RecordingApplier) -> None:
    store.put(key("web", "a"), endpoint(1))
    for _ in start_watcher(store, applier):
        wait_for(lambda: applier.last == "web=1,;")
        store.put(key("web", "b"), endpoint(2))
        wait_for(lambda: applier.last == "web=1,2,;")


def test_a_burst_is_applied_once_with_the_final_state(store: MemoryStore, applier: RecordingApplier) -> None:
    store.put(key("web", "a"), endpoint(1))
    for _ in start_watcher(store, applier, wait=Wait(0.1, 2.0)):
        wait_for(lambda: applier.last == "web=1,;")
        before = len(applier.passes)
        for port in range(2, 1002):
            store.put(key("web", "a"), endpoint(port))
        wait_for(lambda: applier.last == "web=1001,;")
        assert len(applier.passes) - before <= 2


def test_an_outage_keeps_the_config_and_changes_after_it_are_applied(
        watcher: Watcher, store: MemoryStore, applier: RecordingApplier) -> None:
    store.put(key("web", "a"), endpoint(1))
    wait_for(lambda: applier.last == "web=1,;")
    passes = len(applier.passes)
    store.set_available(False)
    wait_for(lambda: not watcher.status.connected)
    assert len(applier.passes) == passes, "nothing may be applied while the registry is down"
    store.set_available(True)
    store.put(key("web", "b"), endpoint(2))
    wait_for(lambda: applier.last == "web=1,2,;")
    assert watcher.status.connected


def test_a_registry_restored_from_scratch_is_re_snapshotted(store: MemoryStore, applier: RecordingApplier) -> None:
    store.put(key("web", "a"), endpoint(1))
    store.put(key("web", "b"), endpoint(2))
    for _ in start_watcher(store, applier):
        wait_for(lambda: applier.last == "web=1,2,;")
        store.wipe()
        store.put(key("web", "c"), endpoint(3))
        wait_for(lambda: applier.last == "web=3,;")


def test_compaction_past_the_watch_forces_a_resnapshot(store: MemoryStore, applier: RecordingApplier) -> None:
    small = MemoryStore(history=5)
    small.put(key("web", "a"), endpoint(1))
    for watcher in start_watcher(small, applier):
        wait_for(lambda: applier.last == "web=1,;")
        small.set_available(False)
        small.set_available(True)
        for port in range(2, 20):
            small.put(key("web", "a"), endpoint(port))
        wait_for(lambda: applier.last == "web=19,;")


def test_bad_values_are_skipped_and_the_rest_renders(watcher: Watcher, store: MemoryStore,
                                                     applier: RecordingApplier) -> None:
    store.put(key("web", "a"), endpoint(1))
    store.put(key("web", "evil"), b'{"address": "1.2.3.4;deny all", "port": 80}')
    store.put(key("api", "x"), endpoint(9))
    wait_for(lambda: applier.last == "api=9,;web=1,;")


def test_the_guard_holds_a_sudden_drop_to_zero(store: MemoryStore, applier: RecordingApplier) -> None:
    store.put(key("web", "a"), endpoint(1))
    for watcher in start_watcher(store, applier, guard=Guard(max_drop=0.5, to_zero=True, hold_max=0)):
        wait_for(lambda: applier.last == "web=1,;")
        store.delete(key("web", "a"))
        wait_for(lambda: "drop guard holds web" in watcher.status.held.get("lb", ""))
        assert applier.last == "web=1,;"
        store.put(key("web", "b"), endpoint(2))
        wait_for(lambda: applier.last == "web=2,;")


def test_failures_are_retried_and_the_daemon_keeps_running(watcher: Watcher, store: MemoryStore,
                                                           applier: RecordingApplier) -> None:
    applier.failing = "nginx -t exited 1: unknown directive"
    store.put(key("web", "a"), endpoint(1))
    wait_for(lambda: len(applier.passes) >= 3)
    assert "unknown directive" in watcher.status.last_error
    applier.failing = ""
    wait_for(lambda: watcher.status.applied_revision == store.revision)


def test_a_template_error_is_retried_after_the_template_is_fixed(store: MemoryStore,
                                                                 applier: RecordingApplier) -> None:
    source = {"text": "{{ nope.missing }}"}
    store.put(key("web", "a"), endpoint(1))
    for watcher in start_watcher(store, applier, template=lambda _: source["text"]):
        wait_for(lambda: "nope" in watcher.status.last_error)
        assert applier.passes == []
        source["text"] = TEMPLATE
        watcher.templates_changed()
        wait_for(lambda: applier.last == "web=1,;")


def test_nothing_is_rendered_while_the_registry_was_never_reached(store: MemoryStore,
                                                                  applier: RecordingApplier) -> None:
    store.set_available(False)
    for watcher in start_watcher(store, applier):
        wait_for(lambda: watcher.status.last_error != "")
        assert applier.passes == []
        store.set_available(True)
        store.put(key("web", "a"), endpoint(1))
        wait_for(lambda: applier.last == "web=1,;")


def test_health_and_metrics_follow_the_registry(store: MemoryStore, applier: RecordingApplier) -> None:
    store.set_available(False)
    settings = Settings(registry=REGISTRY, prefix=P, wait=Wait(0.01, 0.05), guard=GUARD_OFF,
                        targets=(Target(name="lb", template="lb.j2", dest="/unused"),))
    watcher = Watcher(settings, store, applier, SystemClock(), read_template=lambda _: TEMPLATE,
                      retry_base=0.01, retry_cap=0.05, stale_after=0.2)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: watcher.problems() and "unavailable" in watcher.problems()[0])
        assert watcher.problems()[0].startswith("registry: no snapshot yet")
        store.set_available(True)
        store.put(key("web", "a"), endpoint(1))
        # the lane records the pass before the consumer has its result: wait for the consumer
        wait_for(lambda: applier.last == "web=1,;" and watcher.status.applied.get("lb") == store.revision)
        assert watcher.problems() == []
        sample = watcher.metrics.registry.get_sample_value
        assert sample("lbgen_watcher_served_endpoints", {"service": "web"}) == 1
        assert sample("lbgen_watcher_applied_revision", {"target": "lb"}) == store.revision
        store.set_available(False)
        wait_for(lambda: bool(watcher.problems()) and "disconnected for" in watcher.problems()[0])
        assert sample("lbgen_watcher_registry_connected") == 0
    finally:
        watcher.stop()
        thread.join(timeout=5)


class _Tracked(Snapshot, weakref=True):
    """A Snapshot that can be referred to weakly (lbgen's own takes no weak references)."""


class SnapshotSpy(MemoryStore):
    """A MemoryStore that remembers each snapshot it handed out, weakly."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[weakref.ref[Snapshot]] = []

    def snapshot(self, prefix: str) -> Snapshot:
        taken = super().snapshot(prefix)
        snapshot = _Tracked(taken.revision, taken.items, taken.cluster_id)
        self.taken.append(weakref.ref(snapshot))
        return snapshot


def test_a_loaded_snapshot_is_not_kept_while_the_watch_runs(applier: RecordingApplier) -> None:
    """The follower's frame lives as long as the watch: holding the snapshot there kept every raw
    value in memory (3 MB at 10,500 keys, issue 13). Once the catalog holds it, it can go."""
    spy = SnapshotSpy()
    spy.put(key("web", "a"), endpoint(1))
    for _ in start_watcher(spy, applier):
        wait_for(lambda: applier.last == "web=1,;")
        spy.put(key("web", "b"), endpoint(2))  # a message after the load: the consumer lets it go
        wait_for(lambda: applier.last == "web=1,2,;")
        gc.collect()
        assert spy.taken and all(ref() is None for ref in spy.taken)


def test_the_first_snapshot_renders_without_waiting_out_the_wait(store: MemoryStore,
                                                                  applier: RecordingApplier) -> None:
    """At start there is no burst to wait out: an LB node starting without a config gets one at
    once, even with a long `wait`; the changes after it are debounced as before."""
    store.put(key("web", "a"), endpoint(1))
    for watcher in start_watcher(store, applier, wait=Wait(30.0, 60.0)):
        wait_for(lambda: applier.last == "web=1,;")
        store.put(key("web", "b"), endpoint(2))
        wait_for(lambda: watcher._windows["lb"].pending)
        assert applier.last == "web=1,;" and len(applier.passes) == 1
