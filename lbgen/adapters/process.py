"""Running external commands (argv, never a shell) with a hard timeout, and the system clock."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from lbgen.core.values import CommandResult

log = logging.getLogger(__name__)


class SubprocessRunner:
    """`lbgen.ports.Runner` over `subprocess`: stdout and stderr combined, stdin closed.

    Each command runs in its own session, so a timeout kills the whole process group: a checker
    or reload script that forked helpers cannot leave them behind (confd has no timeout at all).
    Output goes to a temp file, not a pipe: a reload that starts a daemon keeping stdout open
    (`haproxy -D`) must not look like a hang.
    """

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        log.debug("run %s (timeout %ss)", argv, timeout)
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            except OSError as e:
                return CommandResult(tuple(argv), 127, f"cannot run {argv[0]}: {e}")
            returncode = _wait(proc, timeout)
            out.seek(0)
            output = out.read().decode(errors="replace")
        if returncode is None:
            log.warning("killed %s after %ss", argv, timeout)
            output += f"\n(killed after {timeout}s)"
        return CommandResult(tuple(argv), returncode, output)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None after killing the command's whole process group at `timeout`.

    Waits on a pidfd when the kernel has them: `Popen.wait(timeout)` polls with growing sleeps
    and returns 2-3 ms late on every command, a third of a 100-key pass (bench/README.md).
    """
    try:
        if _exited_within(proc.pid, timeout) is False:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        return proc.wait(timeout)  # at once after a pidfd said so; polls where there are none
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return None


def _exited_within(pid: int, timeout: float) -> bool | None:
    """Block until `pid` exits (True) or `timeout` passes (False); None where pidfds are missing."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
    try:
        return bool(select.select([fd], [], [], max(0.0, timeout))[0])
    finally:
        os.close(fd)


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


def session_members(sid: int) -> frozenset[int]:
    """The live processes whose session id is `sid`: a daemonized nginx master calls setsid(), so
    its workers stay in its session after it dies (orphans still serving the old config)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and fields[0] != "Z" and fields[3] == str(sid):
            found.add(int(entry.name))
    return frozenset(found)


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
