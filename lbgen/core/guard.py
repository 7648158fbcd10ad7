"""The drop guard: hold back the services of a render that suddenly lose what the LB serves.

A registry that lost its state (etcd restored empty, an agent's lease lost behind a partition)
looks exactly like every container stopping at once. consul-template #727 and confd both render
that empty state and take the sites down; lbgen keeps the services that dropped at their last
applied state and says why, while every other change goes live (issue 10.6). A hold ends when the
drop is undone, or has lasted `Guard.hold_max` seconds. A service whose spec was deleted is gone
on purpose and is never held, unless every spec went at once (that is a registry that lost its
state, not an operator).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from lbgen.core.durations import format_duration
from lbgen.core.layout import IdentityMemo
from lbgen.core.model import Catalog, Service
from lbgen.core.settings import Guard

# Served counts per `Service` object, swept at each `check_drop`: it keeps the services of the
# last comparison (baseline and new), so a one-endpoint change recounts one service, not 10,000
# (issue 13). Used by the watcher's consumer thread only (and the one-shot `lbgen render`).
_COUNTS = IdentityMemo()


@dataclass(frozen=True)
class Verdict:
    """Whether a new catalog may go live as it is. `held` names the services to keep at their
    last applied state; `reason` says why (or, past `hold_max`, why the drop went live anyway)."""

    allowed: bool
    reason: str = ""
    held: frozenset[str] = frozenset()


def served_counts(catalog: Catalog, served_health: frozenset[str]) -> dict[str, int]:
    """Served endpoints per service."""
    return {s.name: _COUNTS.get(s, served_health, functools.partial(_served, s, served_health))
            for s in catalog.services}


def _served(service: Service, served_health: frozenset[str]) -> int:
    return len(service.served(served_health))


def removed_on_purpose(previous: Catalog, new: Catalog) -> frozenset[str]:
    """Services that had a spec and have none now (`lbgen registry rm`, a deploy's removal); empty
    when no spec at all is left, which is a registry that lost its state."""
    had = {s.name for s in previous.services if s.spec}
    has = {s.name for s in new.services if s.spec}
    return frozenset(had - has) if has or not had else frozenset()


def check_drop(
    previous: Catalog | None,
    new: Catalog,
    guard: Guard,
    served_health: frozenset[str],
    held_for: float = 0.0,
) -> Verdict:
    """Compare `new` with the catalog last applied to a target (`previous`; None when nothing
    is known: always allowed). `held_for` is how long this target has been holding a drop
    already; past `guard.hold_max` (when above 0) the drop is accepted as real."""
    if previous is None or not guard.enabled:
        return Verdict(True)
    _COUNTS.sweep()
    gone = removed_on_purpose(previous, new)
    before = {n: c for n, c in served_counts(previous, served_health).items() if n not in gone}
    after = {n: c for n, c in served_counts(new, served_health).items() if n not in gone}
    held, problem = _drop(before, after, guard)
    if not held:
        return Verdict(True)
    if guard.hold_max > 0 and held_for >= guard.hold_max:
        return Verdict(True, f"{problem}; applied after holding it {format_duration(guard.hold_max)}")
    return Verdict(False, problem, held)


def check_one_shot(previous: Catalog | None, live_exists: bool, new: Catalog, guard: Guard,
                   served_health: frozenset[str]) -> Verdict:
    """`lbgen render`'s guard: against the catalog last applied when it is known, else against
    the live file: a registry with no served endpoint at all (a wrong `--prefix`, an empty etcd)
    must not replace an existing config. There is no later pass, so nothing is held: refused."""
    if previous is not None:
        return check_drop(previous, new, guard, served_health)
    if guard.enabled and live_exists and not any(served_counts(new, served_health).values()):
        return Verdict(False, f"no served endpoint in the registry at revision {new.revision} "
                              "(wrong --prefix? empty registry?): the live config would lose every backend")
    return Verdict(True)


def _drop(before: dict[str, int], after: dict[str, int], guard: Guard) -> tuple[frozenset[str], str]:
    """The services a drop would hit, and why it is one ("" when there is none)."""
    held: set[str] = set()
    problems = []
    total_before, total_after = sum(before.values()), sum(after.values())
    if total_before and (total_before - total_after) / total_before > guard.max_drop:
        held |= {name for name, count in before.items() if after.get(name, 0) < count}
        problems.append(f"served endpoints would drop from {total_before} to {total_after} "
                        f"(more than {guard.max_drop:.0%} at once)")
    emptied = sorted(name for name, count in before.items() if count and not after.get(name))
    if guard.to_zero and emptied:
        held |= set(emptied)
        problems.append(f"{_names(emptied)} would be left with no served endpoints")
    return frozenset(held), "; ".join(problems)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{'service' if len(names) == 1 else 'services'} {shown}"
