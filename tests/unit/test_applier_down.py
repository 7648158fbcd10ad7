"""An LB that is not running is a failure, found fast (issue 10 part 5): the applier says `down`
instead of "applied", and neither the master socket nor the stats socket of a dead HAProxy costs a
whole timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbgen.adapters.files import LocalFiles
from lbgen.adapters.kinds.haproxy.control import DOWN_AFTER, HaproxyControl
from lbgen.adapters.kinds.haproxy.runtime import HaproxyRuntime
from lbgen.adapters.kinds.nginx import NginxControl
from lbgen.core.kinds.haproxy.runtime_plan import RuntimePlan
from lbgen.core.settings import Target
from lbgen.errors import ApplyError
from lbgen.services.applier import Applier
from tests.support.util import wait_until
from tests.unit.test_applier import NEW, OLD, FakeControl, FakeRunner, make_target


@dataclass
class StoppedControl(FakeControl):
    """An LB whose master is gone."""

    def observe(self) -> None:  # type: ignore[override]
        return None

    def down_reason(self) -> str:
        return "master 41 is gone"


def test_a_built_in_lb_that_is_not_running_fails_written_and_unchanged_targets(tmp_path: Path) -> None:
    control, runner = StoppedControl(), FakeRunner()
    changed, same = make_target(tmp_path, "a", reload=()), make_target(tmp_path, "b", reload=())
    results = Applier(LocalFiles(), runner, lambda t: control).apply([changed, same], {"a": NEW, "b": OLD})
    assert [(r.target, r.ok, r.step) for r in results] == [("a", False, "down"), ("b", False, "down")]
    assert "is not running (master 41 is gone)" in (results[0].error or "")
    assert results[0].wrote and Path(changed.dest).read_text() == NEW, "the checked config waits on disk"
    assert control.signals == 0 and runner.ran("check") == 1


def test_a_target_with_its_own_reload_is_not_judged_by_what_lbgen_cannot_see(tmp_path: Path) -> None:
    runner = FakeRunner()
    target = make_target(tmp_path)  # reload=("reload",): e.g. `docker kill -s HUP` into a container
    [result] = Applier(LocalFiles(), runner, lambda t: StoppedControl()).apply([target], {"lb": NEW})
    assert result.ok and result.reloaded and runner.ran("reload") == 1


def test_lane_keys_follow_the_reload(tmp_path: Path) -> None:
    applier = Applier(LocalFiles(), FakeRunner(), lambda t: FakeControl() if t.kind == "nginx" else None)
    keys = [applier.lane_key(make_target(tmp_path, n, **kw)) for n, kw in [
        ("a", {"reload": ("r1",)}), ("b", {"reload": ("r1",)}), ("c", {"reload": (), "kind": "nginx"}),
        ("d", {"reload": ()}), ("e", {"reload": ()})]]
    assert keys == ["reload:r1", "reload:r1", "fake:lb", "target:d", "target:e"]


class StepClock:
    """Time moves only when someone sleeps: a retry loop's cost shows as `now`, without waiting."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def stale_socket(tmp_path: Path) -> Path:
    """A unix socket file nobody listens on: what `kill -9` of HAProxy leaves behind."""
    path = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path


def haproxy_target(**facts: str) -> Target:
    return Target(name="h", template="t", dest="d", kind="haproxy", timeout=30.0, vars=facts, runtime=True)


def test_a_master_socket_left_behind_means_down_after_the_reexec_grace_not_the_timeout(stale_socket: Path) -> None:
    clock = StepClock()
    control = HaproxyControl(haproxy_target(master_socket=str(stale_socket)), clock)
    assert control.observe() is None
    assert DOWN_AFTER <= clock.t < DOWN_AFTER + 0.1, "refused for the re-exec grace, not the 30 s timeout"
    assert "Connection refused" in control.down_reason()


def test_a_missing_master_socket_is_down_at_once(tmp_path: Path) -> None:
    clock = StepClock()
    control = HaproxyControl(haproxy_target(master_socket=str(tmp_path / "none.sock")), clock)
    assert control.observe() is None and clock.t == 0
    assert control.down_reason() == f"no haproxy master socket at {tmp_path / 'none.sock'}"


def test_a_stats_socket_left_behind_fails_the_runtime_path_within_the_grace(stale_socket: Path) -> None:
    clock = StepClock()
    api = HaproxyRuntime(haproxy_target(stats_socket=str(stale_socket)), clock)
    with pytest.raises(ApplyError, match="Connection refused"):
        api.apply(RuntimePlan(("set weight web/s1 2",), {}))
    assert clock.t < DOWN_AFTER + 0.1


@pytest.fixture
def orphaned(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A session leader ("master") killed with its child ("worker") left running, as `kill -9`
    of a daemonized nginx master leaves its workers; yields the pid file and the dead pid."""
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    pid_file = tmp_path / "nginx.pid"
    pid_file.write_text(f"{leader.pid}\n")
    try:
        wait_until(lambda: _session_has_child(leader.pid), 10.0, "the worker to start", interval=0.005)
        leader.kill()
        leader.wait()
        yield pid_file, leader.pid
    finally:
        os.killpg(leader.pid, signal.SIGKILL)


def _session_has_child(pid: int) -> bool:
    return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_a_dead_nginx_master_is_down_and_its_orphaned_workers_are_named(orphaned: tuple[Path, int]) -> None:
    pid_file, dead = orphaned
    control = NginxControl(Target(name="n", template="t", dest="d", kind="nginx", vars={"pid": str(pid_file)}),
                           StepClock())
    assert control.observe() is None
    reason = control.down_reason()
    assert f"nginx master {dead} from {pid_file} is gone; 1 orphaned worker(s) still serve" in reason
