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

from typing import Mapping

import msgspec

from lbgen.core.durations import format_duration
from lbgen.core.model import Catalog, replaced
from lbgen.core.settings import Guard


class Verdict(msgspec.Struct, frozen=True):
    """Whether a new catalog may go live as it is. `held` names the services to keep at their
    last applied state; `reason` says why (or, past `hold_max`, why the drop went live anyway)."""

    allowed: bool
    reason: str = ""
    held: frozenset[str] = frozenset()


class _Tally(msgspec.Struct, frozen=True):
    """A catalog's served endpoints per service, their total, and how many services have a spec."""

    catalog: Catalog
    served_health: frozenset[str]
    counts: Mapping[str, int]
    total: int
    specs: int


class _Recent:
    """The last tallies made: a new catalog's is the previous one's, redone for the services that
    changed (by identity: the reducer hands out the same `Service` while it is unchanged), so a
    one-endpoint change at 10,000 services recounts one service, not 10,000 (issue 13). Replaced
    whole, never changed."""

    tallies: tuple[_Tally, ...] = ()
    keep = 4  # the catalogs one pass compares: the new one and each target's last applied one


def _tally(catalog: Catalog, served_health: frozenset[str]) -> _Tally:
    recent = [t for t in _Recent.tallies if t.served_health == served_health]
    found = next((t for t in recent if t.catalog is catalog), None)
    if found is None:
        found = _counted(catalog, served_health) if not recent else _recounted(recent[0], catalog)
        _Recent.tallies = (found, *_Recent.tallies)[:_Recent.keep]
    return found


def _counted(catalog: Catalog, served_health: frozenset[str]) -> _Tally:
    counts = {s.name: len(s.served(served_health)) for s in catalog.services}
    return _Tally(catalog, served_health, counts, sum(counts.values()), sum(1 for s in catalog.services if s.spec))


def _recounted(base: _Tally, catalog: Catalog) -> _Tally:
    gone, came = replaced(base.catalog.services, catalog.services)
    counts, total, specs = dict(base.counts), base.total, base.specs
    for service in gone:
        total, specs = total - counts.pop(service.name), specs - bool(service.spec)
    for service in came:
        counts[service.name] = served = len(service.served(base.served_health))
        total, specs = total + served, specs + bool(service.spec)
    return _Tally(catalog, base.served_health, counts, total, specs)


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
    before, after = _tally(previous, served_health), _tally(new, served_health)
    gone, came = replaced(previous.services, new.services)
    had, has = {s.name for s in gone if s.spec}, {s.name for s in came if s.spec}
    # Spec deleted (`lbgen registry rm`, a deploy's removal): gone on purpose, unless no spec at
    # all is left, which is a registry that lost its state.
    removed = had - has if after.specs or not before.specs else set()
    held, problem = _drop(before, after, {s.name for s in (*gone, *came)}, removed, guard)
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
    if guard.enabled and live_exists and not _tally(new, served_health).total:
        return Verdict(False, f"no served endpoint in the registry at revision {new.revision} "
                              "(wrong --prefix? empty registry?): the live config would lose every backend")
    return Verdict(True)


def _drop(before: _Tally, after: _Tally, changed: set[str], removed: set[str], guard: Guard
          ) -> tuple[frozenset[str], str]:
    """The services a drop would hit, and why it is one ("" when there is none). Only `changed`
    services can be hit: the others serve as many endpoints as before."""
    held: set[str] = set()
    problems = []
    total_before = before.total - sum(before.counts.get(n, 0) for n in removed)
    total_after = after.total - sum(after.counts.get(n, 0) for n in removed)
    candidates = [(n, before.counts.get(n, 0), after.counts.get(n, 0)) for n in sorted(changed - removed)]
    if total_before and (total_before - total_after) / total_before > guard.max_drop:
        held |= {name for name, count, now in candidates if now < count}
        problems.append(f"served endpoints would drop from {total_before} to {total_after} "
                        f"(more than {guard.max_drop:.0%} at once)")
    emptied = [name for name, count, now in candidates if count and not now]
    if guard.to_zero and emptied:
        held |= set(emptied)
        problems.append(f"{_names(emptied)} would be left with no served endpoints")
    return frozenset(held), "; ".join(problems)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{'service' if len(names) == 1 else 'services'} {shown}"
