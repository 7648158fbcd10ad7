"""The drop guard: hold back a render that suddenly loses most of what the LB serves.

A registry that lost its state (etcd restored empty, an agent's lease lost behind a partition)
looks exactly like every container stopping at once. consul-template #727 and confd both render
that empty state and take the sites down; lbgen keeps the last applied config instead and says why,
until the drop is undone, or has persisted for `Guard.hold_max` seconds, or the watcher restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbgen.core.durations import format_duration
from lbgen.core.model import Catalog
from lbgen.core.settings import Guard


@dataclass(frozen=True)
class Verdict:
    """Whether a new catalog may be rendered; `reason` says why it is held (or why it passed anyway)."""

    allowed: bool
    reason: str = ""


def served_counts(catalog: Catalog, served_health: frozenset[str]) -> dict[str, int]:
    """Served endpoints per service."""
    return {s.name: len(s.served(served_health)) for s in catalog.services}


def check_drop(
    previous: Catalog | None,
    new: Catalog,
    guard: Guard,
    served_health: frozenset[str],
    held_for: float = 0.0,
) -> Verdict:
    """Compare `new` with the catalog last applied (`previous`, None at start-up: always allowed).

    `held_for` is how long the watcher has been holding a drop already; past `guard.hold_max`
    (when above 0) the drop is accepted as real.
    """
    if previous is None or not guard.enabled:
        return Verdict(True)
    problem = _drop_problem(served_counts(previous, served_health), served_counts(new, served_health), guard)
    if not problem:
        return Verdict(True)
    if guard.hold_max > 0 and held_for >= guard.hold_max:
        return Verdict(True, f"{problem}; applied after holding it {format_duration(guard.hold_max)}")
    return Verdict(False, problem)


def _drop_problem(before: dict[str, int], after: dict[str, int], guard: Guard) -> str:
    total_before, total_after = sum(before.values()), sum(after.values())
    if total_before and (total_before - total_after) / total_before > guard.max_drop:
        return (
            f"served endpoints would drop from {total_before} to {total_after} "
            f"(more than {guard.max_drop:.0%} at once)"
        )
    if guard.to_zero:
        emptied = sorted(name for name, count in before.items() if count and not after.get(name))
        if emptied:
            shown = ", ".join(emptied[:5]) + (f" and {len(emptied) - 5} more" if len(emptied) > 5 else "")
            noun = "service" if len(emptied) == 1 else "services"
            return f"{noun} {shown} would be left with no served endpoints"
    return ""
