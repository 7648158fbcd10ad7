"""nginx as a target: validate the whole config, reload by signalling the master, verify new workers.

`nginx -s reload` re-parses the whole config just to find the master's pid (579 ms at 10,000
upstreams, measured on a 2 vCPU host with Debian's nginx 1.22), so once the candidate has passed
`nginx -t` the master is sent SIGHUP directly.
Then we wait until the master has *finished* handling it — SIGHUP no longer pending and the master
back in `rt_sigsuspend`, read from /proc — so a reload is never signalled while the previous one is
still parsing (which silently kept the old config in the field). Success means new worker pids;
a rejected reload (a port already taken, a missing cert) leaves only the old workers.

Node facts come from the target's `vars`, the same values the default template writes:
`pid` (the master's pid file) and `main_config` (set when dest is a fragment that this main config
includes; the fragment is then validated inside a shadow copy of it, since `nginx -t` cannot check
a lone fragment).
"""

from __future__ import annotations

import glob
import logging
import os
import platform
import re
import signal
import tempfile
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterator

from lbgen.adapters import process as procfs
from lbgen.adapters.kinds.nginx.modules import require_modules
from lbgen.adapters.kinds.nginx.socket_dir import make_directory
from lbgen.core.kinds.nginx import DEFAULT_PID_FILE
from lbgen.core.settings import Target
from lbgen.errors import ApplyError
from lbgen.core.values import Generation
from lbgen.ports import Clock

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.005
# `include <arg>;` at the start of a line (a commented-out include starts with `#`).
_INCLUDE_RE = re.compile(r"""^(?P<indent>[ \t]*)include[ \t]+(?P<arg>"[^"]*"|'[^']*'|[^\s;]+)[ \t]*;""", re.M)


class NginxControl:
    """`lbgen.ports.LbControl[Generation]` for one nginx master, found through its pid file.
    Its check is the core kind's (`nginx -t`, `lbgen.core.kinds.nginx`), on `whole_config`."""

    def __init__(self, target: Target, clock: Clock) -> None:
        self._target = target
        self._clock = clock
        self._pid_file = Path(str(target.vars.get("pid", DEFAULT_PID_FILE)))
        main = target.vars.get("main_config")
        self._main_config = Path(str(main)) if main else None
        self.key = f"nginx:{self._pid_file}"

    @contextmanager
    def whole_config(self, staged: Path) -> Iterator[Path]:
        """The staged file itself, or a shadow of `main_config` that includes it in dest's place.

        The shadow sits beside the main config (hidden) so relative paths resolve as they will
        live: nginx resolves them against the directory of the `-c` file. With the Lua balancer,
        the control socket's private directory is made first: `nginx -t` needs it (so a dry run
        may create it, empty).
        """
        require_modules(self._target.name, staged)
        if self._target.runtime:
            make_directory(self._target)
        dest = Path(os.path.realpath(self._target.dest))
        if self._main_config is None or Path(os.path.realpath(self._main_config)) == dest:
            yield staged
            return
        text = shadow_main_config(self._main_config, dest, staged)
        try:
            fd, name = tempfile.mkstemp(dir=self._main_config.parent, prefix=f".{self._main_config.name}.",
                                        suffix=".shadow")
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except OSError as e:
            raise ApplyError(f"{self._target.name}: write a shadow of {self._main_config}: {e}") from e
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def observe(self) -> Generation | None:
        pid = self._master_pid()
        return None if pid is None else Generation(pid, procfs.children(pid))

    def down_reason(self) -> str:
        """No pid file, or a master that is gone; its orphaned workers (still in the dead master's
        session when nginx daemonized) keep serving the old config, so they are named."""
        pid = procfs.read_pid(self._pid_file)
        if pid is None:
            return f"no nginx master pid in {self._pid_file}"
        if procfs.alive(pid):
            return f"nginx master {pid} from {self._pid_file} is running again"
        orphans = sorted(procfs.session_members(pid))
        left = f"; {len(orphans)} orphaned worker(s) still serve the old config: {orphans[:5]}" if orphans else ""
        return f"nginx master {pid} from {self._pid_file} is gone{left}"

    def request_reload(self) -> None:
        pid = self._master_pid()
        if pid is None:
            raise ApplyError(f"{self._target.name}: nginx is not running (no pid in {self._pid_file})")
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as e:
            raise ApplyError(f"{self._target.name}: signal nginx master {pid}: {e}") from e

    def wait_live(self, before: Generation, timeout: float) -> Generation:
        """Wait until the master has handled SIGHUP; the reload took if it started new workers.

        Where /proc cannot tell whether the master is idle (no `syscall` file, another
        architecture), new workers prove success and a rejected reload is only known at `timeout`.
        """
        deadline = self._clock.now() + timeout
        pid = before.master
        while True:
            if not procfs.alive(pid):
                raise ApplyError(f"{self._target.name}: nginx master {pid} exited during the reload")
            idle = _master_idle(pid)  # before the children: once idle, they are the final ones
            new = procfs.children(pid) - before.workers
            if idle or (idle is None and new):
                break
            if self._clock.now() >= deadline:
                raise ApplyError(f"{self._target.name}: nginx master {pid} did not finish reloading in {timeout:g}s")
            self._clock.sleep(_POLL_SECONDS)
        if not new:
            raise ApplyError(
                f"{self._target.name}: nginx master {pid} rejected the new config and kept its old workers "
                "(its error_log says why: a port in use, a missing file...)"
            )
        return Generation(pid, procfs.children(pid))

    def _master_pid(self) -> int | None:
        pid = procfs.read_pid(self._pid_file)
        return pid if pid is not None and procfs.alive(pid) else None


def shadow_main_config(main_config: Path, dest: Path, staged: Path) -> str:
    """`main_config`'s text with the `include` that loads `dest` loading `staged` instead.

    A glob include (`conf.d/*.conf`) becomes one include per file it matches, in nginx's (sorted)
    order, with dest swapped for the candidate; the other fragments stay in. `ApplyError` when no
    include of the main config matches dest (`vars.main_config` is then wrong).
    """
    try:
        text = main_config.read_text()
    except OSError as e:
        raise ApplyError(f"vars.main_config: cannot read {main_config}: {e}") from e
    found = False

    def swap(match: re.Match[str]) -> str:
        nonlocal found
        files = _included_files(main_config.parent, match["arg"].strip("'\""), dest)
        if files is None:
            return match[0]
        found = True
        chosen = (str(staged) if f == str(dest) else f for f in files)
        return "\n".join(f'{match["indent"]}include "{f}";' for f in chosen)

    shadow = _INCLUDE_RE.sub(swap, text)
    if not found:
        raise ApplyError(f"vars.main_config: {main_config} has no include that loads {dest}")
    return shadow


def _included_files(base: Path, pattern: str, dest: Path) -> list[str] | None:
    """The files an include loads (dest among them even if it is new), or None if dest is not one."""
    full = os.path.join(os.path.realpath(base), pattern)
    if not fnmatch(str(dest), full) and os.path.realpath(full) != str(dest):
        return None
    matches = {os.path.realpath(f) for f in glob.glob(full)} | {str(dest)}
    return sorted(matches)


def _master_idle(pid: int) -> bool | None:
    """Whether the master has handled every SIGHUP and sleeps in `rt_sigsuspend` (None: unknown here)."""
    number = _RT_SIGSUSPEND.get(platform.machine())
    if number is None:
        return None
    pending = procfs.pending_signals(pid)
    syscall = procfs.current_syscall(pid)
    if pending is None or syscall is None:
        return None
    return not pending & (1 << (signal.SIGHUP - 1)) and syscall == number


# rt_sigsuspend's number per architecture (the master waits for signals there between events).
_RT_SIGSUSPEND = {"x86_64": 130, "aarch64": 133}
