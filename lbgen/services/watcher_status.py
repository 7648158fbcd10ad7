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
