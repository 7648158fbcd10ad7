"""One exception tree for lbgen. Each class knows the exit code the CLI returns for it.

Catch `LbgenError` to handle anything lbgen raises on purpose; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import re


class LbgenError(Exception):
    """Base of every error lbgen raises on purpose."""

    exit_code = 1


class UsageError(LbgenError):
    """The command line is wrong."""

    exit_code = 2


class ConfigError(LbgenError):
    """A settings file, deploy spec or registry file is invalid; the message names the field path."""

    exit_code = 2


class InvalidValue(LbgenError):
    """A registry value (etcd key, YAML entry, label) failed validation; the message says why."""


class TemplateError(LbgenError):
    """A template failed to load or render."""


class RenderLimit(TemplateError):
    """A render ran past its target's `render_timeout` or `render_memory` (issue 10)."""


class StoreError(LbgenError):
    """The registry backend (etcd or the YAML file) failed."""

    exit_code = 3


class StoreUnavailable(StoreError):
    """The backend cannot be reached right now; callers retry with backoff."""


class Compacted(StoreError):
    """A watch asked for a revision etcd has compacted away: the caller must re-snapshot."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {requested} is compacted (oldest kept: {compact_revision}); re-snapshot"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class LeaseLost(StoreError):
    """A lease expired or was revoked: everything attached to it is gone from the registry."""


class DockerError(LbgenError):
    """The Docker daemon failed or could not be reached."""

    exit_code = 4


class ApplyError(LbgenError):
    """A target could not be applied (check, write, reload or verify failed)."""

    exit_code = 5


# nginx's `[emerg]`/`[crit]`/`[alert]`/`[error]`, HAProxy's `[ALERT]`: the line that says why.
_WHY_RE = re.compile(r"\[(?:emerg|alert|crit|error)\]|\[ALERT\]", re.IGNORECASE)


def telling_line(output: str, limit: int = 300) -> str:
    """The line of a command's output that says why it failed: the first error-level line of nginx
    or HAProxy, else the last line (`test failed` alone says nothing), cut to `limit` characters."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no output"
    line = next((line for line in lines if _WHY_RE.search(line)), lines[-1])
    return line if len(line) <= limit else f"{line[:limit]}..."


class CommandFailed(ApplyError):
    """An external command (checker, reload, verify) exited non-zero or timed out."""

    def __init__(self, argv: list[str], returncode: int | None, output: str) -> None:
        what = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"{' '.join(argv)} {what}: {telling_line(output)}")
        self.argv = argv
        self.returncode = returncode
        self.output = output


class GuardRefused(LbgenError):
    """`lbgen render` refused a target the drop guard stopped (`--force` applies it anyway)."""

    exit_code = 7


class DeployError(LbgenError):
    """A deploy step failed (a replica never turned healthy or registered, or the policy forbids a
    step); the steps before it stand, the failed one was rolled back."""

    exit_code = 6
