"""What the watcher reports about itself: the health endpoint, `lbgen status` (through the LB
node's status value) and the dashboard read it. Updated by the watcher's consumer only."""

from __future__ import annotations

import msgspec


class WatcherStatus(msgspec.Struct):
    """What the health endpoint, metrics and `lbgen status` report; updated by the consumer only."""

    connected: bool = False
    revision: int = 0
    applied_revision: int = 0
    last_error: str = ""
    disconnected_since: float | None = None
    failures: dict[str, int] = {}
    applied: dict[str, int] = {}  # target → the revision it last applied
    errors: dict[str, str] = {}  # target → its error, until it applies again
    down: dict[str, str] = {}  # target → why its LB is not running
    held: dict[str, str] = {}  # target → what the drop guard holds, and why
    quarantined: dict[str, dict[str, str]] = {}  # target → service → checker's reason
    runtime_updates: dict[str, int] = {}  # target → changes live without a reload
    runtime_fallbacks: dict[str, int] = {}  # target → runtime updates that reloaded

    def went_live(self, target: str, method: str, fallback: str) -> None:
        """Count how a change of `target` went live: through the runtime API, or a reload after a
        runtime update failed (issues 7 and 12)."""
        if method == "runtime":
            self.runtime_updates[target] = self.runtime_updates.get(target, 0) + 1
        if fallback:
            self.runtime_fallbacks[target] = self.runtime_fallbacks.get(target, 0) + 1


def problems(status: WatcherStatus, loaded: bool, now: float, stale_after: float) -> list[str]:
    """Why a watcher is not healthy (for `/healthz`): no snapshot yet (`loaded`), a watch stale for
    `stale_after` seconds, a template that does not render, an LB that is not running."""
    if not loaded:
        return [f"registry: no snapshot yet{': ' + status.last_error if status.last_error else ''}"]
    found = [f"{name}: {error.removeprefix('render: ')}" for name, error in sorted(status.errors.items())
             if error.startswith("render: ")]  # a template that does not render (the watcher's `_fail`)
    found += [f"{name}: LB down: {reason}" for name, reason in sorted(status.down.items())]
    since = status.disconnected_since
    if since is not None and now - since >= stale_after:
        return [f"registry: disconnected for {now - since:.0f}s, serving revision "
                f"{status.applied_revision}: {status.last_error}"] + found
    return found
