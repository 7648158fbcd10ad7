"""What a SIGHUP may change in a running `lbgen watch` (issue 10; docs/operations.md).

The targets (template, dest, commands, vars, wait, timeouts, render limits), `wait`,
`served_health` and `guard` change at once. The registry, the prefix and the etcd options keep
their running values until a restart: the store is open and the node's status is published under
the prefix. A file that adds or removes a target is refused as a whole (a restart applies it).
"""

from __future__ import annotations

from msgspec.structs import replace

from lbgen.core.settings import Settings
from lbgen.errors import ConfigError

RESTART_ONLY = ("registry", "prefix", "etcd")


def reloaded(running: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """The settings to run from now on, and one line per change that waits for a restart.

    Raises `ConfigError` when the target names differ: the running settings then stay as they are.
    """
    names = sorted(t.name for t in running.targets)
    new_names = sorted(t.name for t in new.targets)
    if names != new_names:
        raise ConfigError(f"targets: adding or removing a target needs a restart "
                          f"(running: {', '.join(names)}; file: {', '.join(new_names)})")
    pending = [f"{field}: changed in the file, takes effect at the next restart"
               for field in RESTART_ONLY if getattr(running, field) != getattr(new, field)]
    return replace(new, registry=running.registry, prefix=running.prefix, etcd=running.etcd), pending
