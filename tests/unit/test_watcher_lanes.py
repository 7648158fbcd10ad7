"""Each LB applies in its own lane (issue 10.5): a stuck LB does not delay another, only the latest
render reaches it once it is free, and an LB that is not running is reported, never "applied"."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.cli.status import format_overview
from lbgen.core.lb_node_status import LbStatus, TargetStatus, decode_lb_status, encode_lb_status
from lbgen.core.overview import build_overview
from lbgen.core.values import KeyValue, Snapshot
from lbgen.core.settings import GUARD_OFF, Guard, Settings, Target, Wait
from lbgen.services.applier import TargetResult
from lbgen.services.lanes import Job, Lane
from lbgen.services.watcher import Watcher
from tests.unit.test_watcher import P, REGISTRY, TEMPLATE, SystemClock, endpoint, key, start_watcher, wait_for


@dataclass
class GatedApplier:
    """Each target is its own LB; `gates[name]` (when set) blocks its apply until released;
    `down[name]` makes its LB "not running"."""

    gates: dict[str, threading.Event] = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)
    applied: dict[str, list[str]] = field(default_factory=dict)
    entered: dict[str, threading.Event] = field(default_factory=dict)

    def lane_key(self, target: Target) -> str:
        return target.name

    def apply(self, targets: Sequence[Target], rendered: Mapping[str, str]) -> list[TargetResult]:
        results = []
        for name, text in rendered.items():
            self.entered.setdefault(name, threading.Event()).set()
            gate = self.gates.get(name)
            if gate is not None:
                gate.wait()
            self.applied.setdefault(name, []).append(text)
            if name in self.down:
                results.append(TargetResult(name, True, wrote=True, step="down", error=self.down[name]))
            else:
                results.append(TargetResult(name, changed=True, wrote=True, method="reload"))
        return results


def run_watcher(store: MemoryStore, applier: GatedApplier) -> Iterator[Watcher]:
    """The watcher over an nginx and a haproxy target; it must stop even while a lane is stuck
    (`start_watcher` asserts it), then the gates open to let the lane threads end."""
    yield from start_watcher(store, applier, wait=Wait(0.01, 0.1), names=("nginx", "haproxy"))  # type: ignore[arg-type]
    for gate in applier.gates.values():
        gate.set()


def test_a_stuck_lb_does_not_delay_another_and_gets_only_the_latest_render_when_free() -> None:
    store, applier = MemoryStore(), GatedApplier(gates={"haproxy": threading.Event()})
    store.put(key("web", "a"), endpoint(1))
    for watcher in run_watcher(store, applier):
        wait_for(lambda: applier.applied.get("nginx") == ["web=1,;"] and "haproxy" in applier.entered)
        assert "haproxy" not in applier.applied, "haproxy is stuck"
        for port in range(2, 7):
            store.put(key("web", "a"), endpoint(port))
            wait_for(lambda: watcher.status.applied.get("nginx") == store.revision)
        assert applier.applied["nginx"][-1] == "web=6,;" and "haproxy" not in applier.applied
        applier.gates["haproxy"].set()
        wait_for(lambda: watcher.status.applied.get("haproxy") == store.revision)
        assert applier.applied["haproxy"] == ["web=1,;", "web=6,;"], "renders waiting for a busy lane coalesce"


def test_a_stuck_lane_does_not_keep_the_watcher_from_stopping() -> None:
    store, applier = MemoryStore(), GatedApplier(gates={"haproxy": threading.Event()})
    store.put(key("web", "a"), endpoint(1))
    stopped = run_watcher(store, applier)
    next(stopped)
    wait_for(lambda: "haproxy" in applier.entered)
    stopped.close()  # stops the watcher; asserts its thread ended although the haproxy apply never returned
    assert "haproxy" not in applier.applied
    applier.gates["haproxy"].set()

def test_an_lb_that_is_not_running_is_a_problem_until_it_runs_again() -> None:
    store, applier = MemoryStore(), GatedApplier(down={"haproxy": "haproxy is not running (no master socket)"})
    store.put(key("web", "a"), endpoint(1))
    for watcher in run_watcher(store, applier):
        sample = watcher.metrics.registry.get_sample_value
        wait_for(lambda: "haproxy" in watcher.status.down and watcher.status.applied.get("nginx") == store.revision)
        assert watcher.problems() == ["haproxy: LB down: haproxy is not running (no master socket)"]
        assert watcher.status.errors["haproxy"].startswith("down: haproxy is not running")
        assert "haproxy" not in watcher.status.applied
        assert sample("lbgen_watcher_lb_up", {"target": "haproxy"}) == 0
        assert sample("lbgen_watcher_lb_up", {"target": "nginx"}) == 1
        del applier.down["haproxy"]  # it starts: the retry finds it running
        wait_for(lambda: watcher.status.applied.get("haproxy") == store.revision)
        assert watcher.problems() == [] and "haproxy" not in watcher.status.errors
        assert sample("lbgen_watcher_lb_up", {"target": "haproxy"}) == 1


A, B = Target(name="a", template="t", dest="d"), Target(name="b", template="t", dest="d")


def busy_lane(done: list[Job]) -> tuple[Lane, threading.Event]:
    """A started lane whose first job (`a`: "1") is in progress until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def work(job: Job) -> None:
        started.set()
        release.wait()
        done.append(job)

    lane = Lane("lb", work)
    lane.start()
    lane.submit(Job((A,), {"a": "1"}, {}))
    started.wait(5)
    return lane, release


def test_a_lane_merges_waiting_jobs_per_target() -> None:
    done: list[Job] = []
    lane, release = busy_lane(done)
    lane.submit(Job((A,), {"a": "2"}, {}))
    lane.submit(Job((B,), {"b": "1"}, {}))
    lane.submit(Job((A,), {"a": "3"}, {}))
    release.set()
    wait_for(lambda: len(done) == 2)
    lane.stop()
    assert lane.join(5)
    assert [dict(j.texts) for j in done] == [{"a": "1"}, {"a": "3", "b": "1"}]


@pytest.mark.parametrize("drain, texts", [(True, [{"a": "1"}, {"b": "1"}]), (False, [{"a": "1"}])],
                         ids=["drain", "drop"])
def test_a_stopped_lane_finishes_its_work_and_drains_the_waiting_job_only_when_asked(
        drain: bool, texts: list[dict[str, str]]) -> None:
    done: list[Job] = []
    lane, release = busy_lane(done)
    lane.submit(Job((B,), {"b": "1"}, {}))
    lane.stop(drain=drain)
    release.set()
    assert lane.join(5) and [dict(j.texts) for j in done] == texts


def test_a_down_lb_is_published_and_shown_as_down_never_in_sync() -> None:
    status = LbStatus("lb-1", 5, {"nginx": TargetStatus(5), "haproxy": TargetStatus(4, "down: haproxy is not "
                                                                                    "running", up=False)}, True)
    raw = encode_lb_status(status)
    assert decode_lb_status("lb-1", raw) == status and decode_lb_status("lb-1", raw).down == ["haproxy"]
    snapshot = Snapshot(9, (KeyValue(f"{P}/lb/lb-1", raw, 9),))
    lines = format_overview("memory", build_overview(P, snapshot), 0.0)
    assert any("lb-1" in line and "LB down" in line for line in lines)
    assert not any("in sync" in line for line in lines)
    assert "  LB node lb-1: haproxy: down: haproxy is not running" in lines


def test_a_result_for_an_older_render_does_not_hide_the_render_error_after_it() -> None:
    store, applier = MemoryStore(), GatedApplier(gates={"lb": threading.Event()})
    source = {"text": TEMPLATE}
    store.put(key("web", "a"), endpoint(1))
    settings = Settings(registry=REGISTRY, prefix=P, wait=Wait(0.01, 0.1), guard=GUARD_OFF,
                        targets=(Target(name="lb", template="t.j2", dest="/unused"),))
    watcher = Watcher(settings, store, applier, SystemClock(), read_template=lambda _: source["text"],  # type: ignore[arg-type]
                      retry_base=60, retry_cap=60)  # no retry during the test: only the late result acts
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: "lb" in applier.entered)  # its first render is being applied
        source["text"] = "{{ nope.missing }}"
        watcher.templates_changed()
        wait_for(lambda: watcher.status.errors.get("lb", "").startswith("render: "))
        applier.gates["lb"].set()  # the older render's result arrives after the failed render
        wait_for(lambda: watcher.status.applied.get("lb") == store.revision)
        assert watcher.status.errors["lb"].startswith("render: ") and "nope" in watcher.problems()[0]
        source["text"] = TEMPLATE
        watcher.templates_changed()
        wait_for(lambda: "lb" not in watcher.status.errors)
    finally:
        applier.gates["lb"].set()
        watcher.stop()
        thread.join(timeout=10)


def test_a_drop_while_the_lane_is_still_applying_is_held_at_what_the_lane_applies() -> None:
    """The guard's baseline is the catalog handed to the lane, not the older one it last reported:
    holding `web` at the older state would take its newest endpoint back out (a race seen in
    test_the_drop_guard_holds_a_delete_everything)."""
    store, applier = MemoryStore(), GatedApplier()
    store.put(key("web", "a"), endpoint(1))
    guard = Guard(max_drop=0.5, to_zero=True, hold_max=60)
    for watcher in start_watcher(store, applier, guard=guard):  # type: ignore[arg-type]
        wait_for(lambda: watcher.status.applied.get("lb") == store.revision)
        applier.gates["lb"], applier.entered["lb"] = threading.Event(), threading.Event()
        store.put(key("web", "b"), endpoint(2))
        wait_for(applier.entered["lb"].is_set)  # the lane is applying web=1,2 and has not reported yet
        store.delete(key("web", "a"))
        store.delete(key("web", "b"))
        wait_for(lambda: "lb" in watcher.status.held)
        applier.gates["lb"].set()
        wait_for(lambda: watcher.status.applied.get("lb", 0) >= store.revision - 2 and len(applier.applied["lb"]) >= 2)
        wait_for(lambda: applier.applied["lb"][-1] == "web=1,2,;")
        assert "web=1,;" not in applier.applied["lb"][1:], applier.applied["lb"]
