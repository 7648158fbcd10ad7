"""Quiescence (debounce) with consul-template's `wait = "min:max"` semantics, fed with `now`.

A burst of changes renders once: when no change arrived for `min` seconds, or at the latest `max`
seconds after the first unrendered change (so a registry that never goes quiet still renders).
With `Wait(0, 0)` every change is due at once. The watcher loop owns one instance, calls `note(now)`
for each change, sleeps `timeout(now)` (or until the next event), and renders when `due(now)`.
`settled(now)` marks a change that needs no waiting (the watcher's first complete snapshot: there is
no burst to wait out, and an LB node starting without a config should not wait `min` for one).
"""

from __future__ import annotations

from lbgen.core.settings import Wait


class Quiescence:
    """The pending-change window of one render target (or of all targets sharing a wait)."""

    def __init__(self, wait: Wait) -> None:
        self.wait = wait
        self._first: float | None = None
        self._last = 0.0
        self._at_once = False

    @property
    def pending(self) -> bool:
        """Whether a change is waiting to be rendered."""
        return self._first is not None

    def note(self, now: float) -> None:
        """A change arrived at `now`."""
        if self._first is None:
            self._first = now
        self._last = now

    def settled(self, now: float) -> None:
        """A change arrived at `now` that is due at once, with whatever else is pending."""
        self.note(now)
        self._at_once = True

    def deadline(self) -> float | None:
        """When the pending change becomes due (monotonic seconds), or None when nothing is pending."""
        if self._first is None:
            return None
        if not self.wait.enabled or self._at_once:
            return self._last
        return min(self._last + self.wait.min, self._first + self.wait.max)

    def timeout(self, now: float) -> float | None:
        """How long the loop may sleep before it must look again: None = until the next change."""
        deadline = self.deadline()
        return None if deadline is None else max(0.0, deadline - now)

    def due(self, now: float) -> bool:
        """Whether the pending change must be rendered now."""
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def fired(self) -> None:
        """The pending change was rendered: start a new window with the next change."""
        self._first = None
        self._at_once = False
