"""HAProxy as a target, run in master-worker mode (`haproxy -W -S <master socket> -f cfg`).

Validate with `haproxy -c -f {staged}`; reload through the master socket's `reload` command (the
master re-executes itself, re-reads the config and passes the listeners to the new workers: no
connection is refused); verify with `show proc`: the master's reload counter moved, its failure
counter did not, and a worker that was not there before is running. The master socket refuses
connections for 35–470 ms during each reload (measured on a 2 vCPU host, Debian's HAProxy 2.6),
so every query retries until a deadline.

Node facts come from the target's `vars`: `master_socket` (the `-S` path; Debian's unit uses
/run/haproxy-master.sock).
"""

from __future__ import annotations

import logging
import socket
from contextlib import nullcontext
from pathlib import Path

import msgspec

from lbgen.adapters import process
from lbgen.core.settings import Target
from lbgen.errors import ApplyError
from lbgen.core.values import Generation
from lbgen.ports import Clock

log = logging.getLogger(__name__)

DEFAULT_MASTER_SOCKET = "/run/haproxy-master.sock"
_POLL_SECONDS = 0.01
# Per attempt: a connection accepted while the master re-executes can hang unanswered; retry sooner.
_IO_TIMEOUT = 0.25
# How long a master socket may refuse before HAProxy counts as not running: its re-exec refuses for
# 35–470 ms (measured here with HAProxy 2.6, 2026-11); a killed HAProxy leaves the socket file
# behind, refusing forever (issue 10).
DOWN_AFTER = 2.0
_RETRYABLE = (ConnectionRefusedError, ConnectionResetError, FileNotFoundError, BrokenPipeError, socket.timeout)


class HaproxyControl:
    """`lbgen.ports.LbControl[Generation]` for one HAProxy master, through its master CLI socket.
    Its check is the core kind's (`haproxy -c`, `lbgen.core.kinds.haproxy`)."""

    def __init__(self, target: Target, clock: Clock) -> None:
        self._target = target
        self._clock = clock
        self._socket = Path(str(target.vars.get("master_socket", DEFAULT_MASTER_SOCKET)))
        self.key = f"haproxy:{self._socket}"
        self._down = ""

    def whole_config(self, staged: Path) -> nullcontext[Path]:
        """A HAProxy target is one whole configuration file: the candidate itself is checked."""
        return nullcontext(staged)

    def observe(self) -> Generation | None:
        """`show proc`; None when the socket is gone, or still refuses after `DOWN_AFTER` seconds."""
        if not self._socket.exists():
            self._down = f"no haproxy master socket at {self._socket}"
            return None
        try:
            return self._show_proc(self._clock.now() + min(DOWN_AFTER, self._target.timeout))
        except _Unreachable as e:
            self._down = str(e)
            return None

    def down_reason(self) -> str:
        return self._down or f"haproxy master socket {self._socket} does not answer"

    def request_reload(self) -> None:
        try:
            cli_command(self._socket, "reload")
        except OSError as e:
            raise ApplyError(f"{self._target.name}: reload through {self._socket}: {e}") from e

    def wait_live(self, before: Generation, timeout: float) -> Generation:
        """Wait until the master counts one more reload; it took if none failed and new workers run."""
        deadline = self._clock.now() + timeout
        while True:
            after = self._show_proc(deadline)
            if after.reloads > before.reloads:
                break
            if self._clock.now() >= deadline:
                raise ApplyError(f"{self._target.name}: haproxy master {before.master} did not reload in {timeout:g}s")
            self._clock.sleep(_POLL_SECONDS)
        new = {pid for pid in after.workers - before.workers if process.alive(pid)}
        if after.failed > before.failed or not new:
            raise ApplyError(
                f"{self._target.name}: haproxy master {after.master} rejected the new config "
                f"(failed reloads {before.failed} → {after.failed}); the old workers keep serving"
            )
        return after

    def _show_proc(self, deadline: float) -> Generation:
        """`show proc`, retried while the master is busy reloading."""
        try:
            return parse_show_proc(cli_query(self._socket, "show proc", self._clock, deadline))
        except OSError as e:
            raise _Unreachable(f"{self._target.name}: haproxy master socket {self._socket}: {e}") from e
        except ValueError as e:
            raise ApplyError(f"{self._target.name}: unexpected `show proc` output: {e}") from e


class _Unreachable(ApplyError):
    """The master socket refused or hung until the deadline."""


def cli_query(path: Path, command: str, clock: Clock, deadline: float) -> str:
    """`cli_command`, retried until `deadline` while the socket refuses or hangs (a reload is
    under way); the last `OSError` once the deadline has passed. Only for idempotent commands."""
    while True:
        try:
            return cli_command(path, command)
        except _RETRYABLE:
            if clock.now() >= deadline:
                raise
        clock.sleep(_POLL_SECONDS)


def cli_command(path: Path, command: str, timeout: float = _IO_TIMEOUT) -> str:
    """Send one command to a HAProxy CLI socket (master or stats) and return its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class _ProcLine(msgspec.Struct, frozen=True):
    pid: int
    kind: str
    reloads: int
    failed: int


def parse_show_proc(text: str) -> Generation:
    """The master and its current workers from the master CLI's `show proc`.

    `7541  master  2 [failed: 1]  0d00h10m13s  2.6.12` / `2663  worker  1  0d00h00m07s  2.6.12`
    """
    lines = [_parse_line(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    masters = [line for line in lines if line.kind == "master"]
    if len(masters) != 1:
        raise ValueError(f"expected one master line in {text!r}")
    workers = frozenset(line.pid for line in lines if line.kind == "worker")
    return Generation(masters[0].pid, workers, masters[0].reloads, masters[0].failed)


def _parse_line(line: str) -> _ProcLine:
    fields = line.replace("[", " ").replace("]", " ").split()
    if len(fields) < 3 or not fields[0].isdigit():
        raise ValueError(f"unreadable line {line!r}")
    failed = int(fields[4]) if len(fields) > 4 and fields[3] == "failed:" else 0
    reloads = int(fields[2]) if fields[2].isdigit() else 0
    return _ProcLine(int(fields[0]), fields[1], reloads, failed)
