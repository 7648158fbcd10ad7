"""The apply pipeline with a scripted runner and real files in a temp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lbgen.adapters.files import LocalFiles, lkg_path
from lbgen.adapters.process import SubprocessRunner
from lbgen.core.settings import Target
from lbgen.errors import ApplyError, CommandFailed
from lbgen.core.values import CommandResult, Generation
from lbgen.services.applier import Applier

OLD, NEW = "backend old;\n", "backend new;\n"

Script = Callable[[list[str]], tuple[int | None, str]]


@dataclass
class FakeRunner:
    """Answers each command from `script` (argv → (returncode, output)); records what ran and what
    the staged file held when the checker ran."""

    script: Script = lambda argv: (0, "")
    calls: list[list[str]] = field(default_factory=list)
    staged_seen: list[str] = field(default_factory=list)

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        self.calls.append(argv)
        if argv[0] == "check":
            self.staged_seen.append(Path(argv[1]).read_text())
        code, output = self.script(argv)
        return CommandResult(tuple(argv), code, output)

    def ran(self, program: str) -> int:
        return sum(1 for argv in self.calls if argv[0] == program)


def failing(program: str, code: int | None = 1, output: str = "boom", times: int = 1) -> Script:
    """A script where `program` fails its first `times` runs; everything else succeeds."""
    left = [times]

    def script(argv: list[str]) -> tuple[int | None, str]:
        if argv[0] == program and left[0] > 0:
            left[0] -= 1
            return code, output
        return 0, ""

    return script


def make_target(tmp_path: Path, name: str = "lb", content: str | None = OLD, **kw: object) -> Target:
    dest = tmp_path / f"{name}.conf"
    if content is not None:
        dest.write_text(content)
    defaults: dict[str, object] = {"check": ("check", "{staged}"), "reload": ("reload",), "timeout": 5.0}
    return Target(name=name, template="t.j2", dest=str(dest), **{**defaults, **kw})  # type: ignore[arg-type]


def leftovers(tmp_path: Path) -> list[str]:
    """Temp files the pipeline left behind (the LKG is kept on purpose)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lkg"))


def test_a_good_change_is_checked_staged_then_written_and_reloaded_once(tmp_path: Path) -> None:
    runner = FakeRunner()
    target = make_target(tmp_path)
    [result] = Applier(LocalFiles(), runner).apply([target], {"lb": NEW})
    assert (result.ok, result.wrote, result.reloaded, result.rolled_back) == (True, True, True, False)
    assert Path(target.dest).read_text() == NEW
    assert runner.staged_seen == [NEW], "the checker must see the candidate, not the live file"
    assert runner.calls[0][1] != target.dest and Path(runner.calls[0][1]).parent == tmp_path
    assert lkg_path(Path(target.dest)).read_text() == OLD
    assert runner.ran("reload") == 1 and leftovers(tmp_path) == []


def test_an_identical_render_writes_and_runs_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    target = make_target(tmp_path)
    before = Path(target.dest).stat().st_mtime_ns
    [result] = Applier(LocalFiles(), runner).apply([target], {"lb": OLD})
    assert (result.ok, result.changed, result.wrote, result.reloaded) == (True, False, False, False)
    assert runner.calls == [] and Path(target.dest).stat().st_mtime_ns == before


def test_a_failed_check_leaves_dest_untouched_and_reports_the_checkers_output(tmp_path: Path) -> None:
    runner = FakeRunner(failing("check", output="line 3: unknown directive \"bakend\""))
    target = make_target(tmp_path)
    [result] = Applier(LocalFiles(), runner).apply([target], {"lb": NEW})
    assert (result.ok, result.step, result.wrote) == (False, "check", False)
    assert "unknown directive" in result.output and "unknown directive" in (result.error or "")
    assert Path(target.dest).read_text() == OLD
    assert runner.ran("reload") == 0 and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "script",
    [failing("reload", code=1), failing("reload", code=None, output="(killed after 5.0s)"), failing("verify")],
    ids=["reload-exits-1", "reload-times-out", "verify-fails"],
)
def test_a_failed_reload_or_verify_restores_the_lkg_and_reloads_it(tmp_path: Path, script: Script) -> None:
    runner = FakeRunner(script)
    target = make_target(tmp_path, verify=("verify",))
    [result] = Applier(LocalFiles(), runner).apply([target], {"lb": NEW})
    assert (result.ok, result.step, result.wrote, result.rolled_back) == (False, "reload", True, True)
    assert Path(target.dest).read_text() == OLD
    assert runner.ran("reload") == 2, "the LKG must be reloaded after it is restored"


def test_a_timed_out_reload_says_so(tmp_path: Path) -> None:
    runner = FakeRunner(failing("reload", code=None, output=""))
    [result] = Applier(LocalFiles(), runner).apply([make_target(tmp_path)], {"lb": NEW})
    assert "timed out" in (result.error or "")


def test_a_failed_first_write_is_removed_again(tmp_path: Path) -> None:
    runner = FakeRunner(failing("reload"))
    target = make_target(tmp_path, content=None)
    [result] = Applier(LocalFiles(), runner).apply([target], {"lb": NEW})
    assert result.rolled_back and not Path(target.dest).exists()


def test_a_failed_rollback_is_reported_as_such(tmp_path: Path) -> None:
    runner = FakeRunner(failing("reload", times=2))
    [result] = Applier(LocalFiles(), runner).apply([make_target(tmp_path)], {"lb": NEW})
    assert not result.rolled_back and "rollback failed" in (result.error or "")


def test_targets_sharing_a_reload_command_reload_once(tmp_path: Path) -> None:
    runner = FakeRunner()
    targets = [make_target(tmp_path, "a"), make_target(tmp_path, "b"), make_target(tmp_path, "c", reload=("reload", "other"))]
    results = Applier(LocalFiles(), runner).apply(targets, {"a": NEW, "b": NEW, "c": NEW})
    assert all(r.reloaded for r in results)
    assert [argv for argv in runner.calls if argv[0] == "reload"] == [["reload"], ["reload", "other"]]


def test_one_bad_target_does_not_block_the_others(tmp_path: Path) -> None:
    runner = FakeRunner(lambda argv: (1, "bad") if argv[0] == "check" and "bad" in Path(argv[1]).read_text() else (0, ""))
    targets = [make_target(tmp_path, "a"), make_target(tmp_path, "b")]
    a, b = Applier(LocalFiles(), runner).apply(targets, {"a": "bad\n", "b": NEW})
    assert (a.step, a.wrote, b.wrote, b.reloaded) == ("check", False, True, True)
    assert runner.ran("reload") == 1


def test_a_shared_reload_failure_rolls_back_every_target_of_that_lb(tmp_path: Path) -> None:
    runner = FakeRunner(failing("reload"))
    targets = [make_target(tmp_path, "a"), make_target(tmp_path, "b")]
    results = Applier(LocalFiles(), runner).apply(targets, {"a": NEW, "b": NEW})
    assert all(r.rolled_back for r in results)
    assert [Path(t.dest).read_text() for t in targets] == [OLD, OLD]


def test_preview_diffs_and_checks_without_touching_anything_live(tmp_path: Path) -> None:
    runner = FakeRunner(lambda argv: (1, "emerg: bad") if "broken" in Path(argv[1]).read_text() else (0, ""))
    good, bad, same = make_target(tmp_path, "good"), make_target(tmp_path, "bad"), make_target(tmp_path, "same")
    previews = Applier(LocalFiles(), runner).preview([good, bad, same], {"good": NEW, "bad": "broken\n", "same": OLD})
    assert [(p.target, p.valid) for p in previews] == [("good", True), ("bad", False), ("same", True)]
    assert "+backend new;" in previews[0].diff and previews[2].diff == ""
    assert previews[1].check_output == "emerg: bad"
    assert [Path(t.dest).read_text() for t in (good, bad, same)] == [OLD, OLD, OLD]
    assert runner.ran("reload") == 0 and leftovers(tmp_path) == []


def test_check_text_runs_the_checker_on_a_staged_file_and_touches_nothing_live(tmp_path: Path) -> None:
    runner = FakeRunner(lambda argv: (1, "emerg: bad") if "broken" in Path(argv[1]).read_text() else (0, ""))
    target, applier = make_target(tmp_path), Applier(LocalFiles(), runner)
    assert applier.check_text(target, NEW) is None
    error = applier.check_text(target, "broken\n")
    assert isinstance(error, CommandFailed) and error.output == "emerg: bad"
    assert Path(target.dest).read_text() == OLD and leftovers(tmp_path) == []
    assert runner.ran("reload") == 0


def test_a_target_without_check_goes_live_unvalidated(tmp_path: Path) -> None:
    runner = FakeRunner()
    target = make_target(tmp_path, check=())
    [result] = Applier(LocalFiles(), runner).apply([target], {"lb": NEW})
    assert result.ok and runner.ran("check") == 0 and Path(target.dest).read_text() == NEW


def test_a_target_without_any_reload_is_only_written(tmp_path: Path) -> None:
    runner = FakeRunner()
    target = make_target(tmp_path, reload=(), verify=("verify",))
    [result] = Applier(LocalFiles(), runner).apply([target], {"lb": NEW})
    assert (result.ok, result.wrote, result.reloaded) == (True, True, False)
    assert [argv[0] for argv in runner.calls] == ["check"]


# --- the built-in reload of a kind (LbControl) ---------------------------------------------------


@dataclass
class FakeControl:
    """An LB whose reloads produce a new worker pid, unless `rejects` says the next one fails."""

    key: str = "fake:lb"
    rejects: int = 0
    workers: int = 100
    signals: int = 0
    checked_in: list[Path] = field(default_factory=list)

    @contextmanager
    def whole_config(self, staged: Path) -> Iterator[Path]:
        shadow = staged.with_name(".shadow")
        shadow.write_text(staged.read_text())
        self.checked_in.append(shadow)
        yield shadow
        shadow.unlink()

    def observe(self) -> Generation | None:
        return Generation(1, frozenset({self.workers}))

    def request_reload(self) -> None:
        self.signals += 1
        if self.rejects:
            self.rejects -= 1
        else:
            self.workers += 1

    def wait_live(self, before: Generation, timeout: float) -> Generation:
        if {self.workers} == before.workers:
            raise ApplyError("kept its old workers")
        return Generation(1, frozenset({self.workers}))


def test_built_in_reload_checks_the_whole_config_and_waits_for_new_workers(tmp_path: Path) -> None:
    control, runner = FakeControl(), FakeRunner()
    targets = [make_target(tmp_path, "a", reload=()), make_target(tmp_path, "b", reload=())]
    results = Applier(LocalFiles(), runner, lambda t: control).apply(targets, {"a": NEW, "b": NEW})
    assert all(r.reloaded for r in results) and control.signals == 1
    assert [argv[1] for argv in runner.calls] == [str(p) for p in control.checked_in]
    assert runner.staged_seen == [NEW, NEW] and leftovers(tmp_path) == []


def test_built_in_reload_that_keeps_the_old_workers_is_rolled_back(tmp_path: Path) -> None:
    control = FakeControl(rejects=1)
    target = make_target(tmp_path, reload=())
    [result] = Applier(LocalFiles(), FakeRunner(), lambda t: control).apply([target], {"lb": NEW})
    assert result.rolled_back and "old workers" in (result.error or "")
    assert control.signals == 2 and Path(target.dest).read_text() == OLD


def test_a_target_without_a_check_runs_its_kinds_built_in_check_on_the_whole_config(tmp_path: Path) -> None:
    control, runner = FakeControl(), FakeRunner()
    target = make_target(tmp_path, check=(), reload=(), kind="nginx")
    [result] = Applier(LocalFiles(), runner, lambda t: control).apply([target], {"lb": NEW})
    assert result.reloaded and runner.calls == [["nginx", "-t", "-q", "-c", str(control.checked_in[0])]]


# --- a dest that is a single bind-mounted file (docker-gen #629) -----------------------------------


@pytest.fixture
def bind_mounted(tmp_path: Path) -> Iterator[Path]:
    """`lb.conf` bind-mounted from `host.conf`, as a container sees a single mounted file."""
    host, dest = tmp_path / "host.conf", tmp_path / "lb.conf"
    host.write_text(OLD)
    dest.write_text("")
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(host), str(dest)], capture_output=True).returncode:
        pytest.skip("bind-mounting a file needs root and mount(8)")
    yield host
    subprocess.run(["umount", str(dest)], check=True)


@pytest.mark.integration
def test_a_bind_mounted_dest_is_written_in_place_and_rolled_back_in_place(
    tmp_path: Path, bind_mounted: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(tmp_path, content=None)
    [result] = Applier(LocalFiles(), FakeRunner()).apply([target], {"lb": NEW})
    assert result.ok and bind_mounted.read_text() == NEW, "the host side of the mount must see the change"
    assert "bind-mounted file?" in caplog.text
    [failed] = Applier(LocalFiles(), FakeRunner(failing("reload"))).apply([target], {"lb": "third\n"})
    assert failed.rolled_back and bind_mounted.read_text() == NEW
    assert leftovers(tmp_path) == []


# --- the real runner ----------------------------------------------------------------------------


def test_the_runner_combines_output_and_reports_the_exit_code() -> None:
    script = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    result = SubprocessRunner().run([sys.executable, "-c", script], timeout=10)
    assert (result.returncode, sorted(result.output.split())) == (3, ["err", "out"])


def test_the_runner_does_not_wait_for_a_daemon_the_command_left_behind() -> None:
    # The daemon holds the command's stdout for 60 s, twice the runner's timeout: a runner that
    # waited for its output would fail the run (timed out), whatever the machine's load.
    script = "import subprocess; print(subprocess.Popen(['sleep', '60'], start_new_session=True).pid)"
    result = SubprocessRunner().run([sys.executable, "-c", script], timeout=30)
    daemon = int(result.output.split()[0])
    os.kill(daemon, signal.SIGKILL)
    assert result.ok, f"waited for the daemon's stdout: {result}"


def test_a_missing_program_is_a_failed_command_not_a_crash() -> None:
    result = SubprocessRunner().run(["/nonexistent/lbgen-reload"], timeout=1)
    assert result.returncode == 127 and "cannot run" in result.output
