"""The drop guard per target, for the watcher's consumer (issue 10.6).

Each target has its own hold and its own timer: one target applying never resets another's
`hold_max`. A hold keeps only the services that dropped at their last applied state; the render
carries every other change. It logs one WARNING when it starts and one when it ends (an INFO when
the set of held services changes in between), never one per pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lbgen.core.durations import format_duration
from lbgen.core.guard import Verdict, check_drop
from lbgen.core.model import Catalog
from lbgen.core.quarantine import hold_services
from lbgen.core.settings import Guard, Target
from lbgen.ports import AppliedStates
from lbgen.services.watcher_metrics import WatcherMetrics

log = logging.getLogger(__name__)


class DropHolds:
    """The holds of every target; owned by one thread (the watcher's consumer)."""

    def __init__(self, guard: Guard, served_health: frozenset[str], metrics: WatcherMetrics | None = None) -> None:
        self.guard = guard  # the watcher sets a new one at a settings reload
        self.served_health = served_health
        self._metrics = metrics
        self._since: dict[str, float] = {}
        self.held: dict[str, Verdict] = {}  # target → the hold in force

    def catalog_for(self, target: str, applied: Catalog | None, new: Catalog, now: float) -> Catalog:
        """What to render for `target`: `new`, with each service that suddenly dropped kept as it
        was last applied (`applied`), until the drop is undone or has lasted `hold_max`."""
        since = self._since.get(target)
        verdict = check_drop(applied, new, self.guard, self.served_health, 0.0 if since is None else now - since)
        if applied is None or not verdict.held:
            self._release(target, verdict)
            chosen = new
        else:
            self._hold(target, verdict, now)
            chosen = hold_services(new, applied, verdict.held)
        if self._metrics is not None:
            self._metrics.guard_held.labels(target).set(len(verdict.held) if target in self.held else 0)
        return chosen

    def descriptions(self) -> dict[str, str]:
        """Target → its hold in one line, for the targets holding a drop (the watcher's status)."""
        return {target: f"drop guard holds {', '.join(sorted(v.held))}: {v.reason}" for target, v in self.held.items()}

    def expiries(self) -> dict[str, float]:
        """Target → when its hold reaches `hold_max` (the watcher renders it again then)."""
        if self.guard.hold_max <= 0:
            return {}
        return {target: since + self.guard.hold_max for target, since in self._since.items()}

    def _hold(self, target: str, verdict: Verdict, now: float) -> None:
        before = self.held.get(target)
        self.held[target] = verdict
        names = ", ".join(sorted(verdict.held))
        if before is None:
            self._since[target] = now
            until = (f"at most {format_duration(self.guard.hold_max)}" if self.guard.hold_max > 0
                     else "until undone or restarted")
            log.warning("%s: drop guard: holding %s at the last applied state (%s), the other changes go live: %s",
                        target, names, until, verdict.reason)
        elif before.held != verdict.held:
            log.info("%s: drop guard: now holding %s: %s", target, names, verdict.reason)

    def _release(self, target: str, verdict: Verdict) -> None:
        if self.held.pop(target, None) is None:
            return
        self._since.pop(target, None)
        log.warning("%s: drop guard: hold ended: %s", target,
                    verdict.reason or "the services are back, or were removed on purpose (spec deleted)")


def load_baselines(states: AppliedStates, targets: Sequence[Target], current: Catalog) -> dict[str, Catalog]:
    """What each target last applied before a restart (kept beside its dest): the guard compares
    the first renders with it, so agents that are down at start do not empty the LBs. What did not
    change since is `current`'s own services (no second copy, issue 13)."""
    found = {}
    for target in targets:
        applied = states.load(target, current)
        if applied is not None:
            found[target.name] = applied
            log.info("%s: last applied revision %s (%d services) is the drop guard's baseline",
                     target.name, applied.revision, len(applied.services))
    return found


def newest(applied: Catalog | None, submitted: Catalog | None) -> Catalog | None:
    """The guard's baseline: the catalog last handed to the target's lane, unless its lane has
    already reported one at least as new. A pass that runs while the lane is still applying must
    hold a dropped service at what the lane is applying, not at the state before it: that would
    take the newest endpoints back out (seen in test_the_drop_guard_holds_a_delete_everything)."""
    if submitted is None or (applied is not None and applied.revision >= submitted.revision):
        return applied
    return submitted
