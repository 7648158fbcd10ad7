"""Running external commands (argv, never a shell) with a hard timeout, and the system clock."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from lbgen.errors import CommandFailed
from lbgen.ports import CommandResult, Runner

log = logging.getLogger(__name__)

# After the timeout kill, how long to wait for the pipe to close (a grandchild may still hold it).
_DRAIN_SECONDS = 2.0


class SubprocessRunner:
    """`lbgen.ports.Runner` over `subprocess`: stdout and stderr combined, stdin closed.

    Each command runs in its own session, so a timeout kills the whole process group: a checker
    or reload script that forked helpers cannot leave them behind (confd has no timeout at all).
    """

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        log.debug("run %s (timeout %ss)", argv, timeout)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            return CommandResult(tuple(argv), 127, f"cannot run {argv[0]}: {e}")
        try:
            out, _ = proc.communicate(timeout=timeout)
            return CommandResult(tuple(argv), proc.returncode, out.decode(errors="replace"))
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            partial = _drain(proc)
            log.warning("killed %s after %ss", argv, timeout)
            return CommandResult(tuple(argv), None, partial + f"\n(killed after {timeout}s)")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _drain(proc: subprocess.Popen[bytes]) -> str:
    try:
        out, _ = proc.communicate(timeout=_DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        # A process outside the group (it called setsid) still holds the pipe: stop reading.
        proc.kill()
        proc.wait()
        return ""
    return out.decode(errors="replace")


def run_checked(runner: Runner, argv: list[str], timeout: float) -> CommandResult:
    """Run `argv`; raise `CommandFailed` (with the command's output) unless it exited 0."""
    result = runner.run(argv, timeout)
    if not result.ok:
        raise CommandFailed(argv, result.returncode, result.output)
    return result


class SystemClock:
    """`lbgen.ports.Clock` over the monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


# --- Reading other processes through /proc (Linux) --------------------------------------------------


def read_pid(pid_file: Path) -> int | None:
    """The pid written in `pid_file`, or None when it is missing or not a number."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def children(pid: int) -> frozenset[int]:
    """The live child pids of `pid` (empty when it has exited)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return frozenset()
    return frozenset(int(p) for p in text.split() if alive(int(p)))


def pending_signals(pid: int) -> int | None:
    """The process-wide pending signal mask (`ShdPnd`), or None when unreadable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("ShdPnd:"):
            return int(line.split()[1], 16)
    return None


def current_syscall(pid: int) -> int | None:
    """The syscall `pid` is blocked in; -1 when it is running (or blocked outside a syscall);
    None when this kernel does not tell (no /proc/<pid>/syscall, no permission)."""
    try:
        first = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return None
    return -1 if first == "running" else int(first)
