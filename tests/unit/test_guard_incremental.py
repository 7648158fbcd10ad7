"""The drop guard counts only the services that changed (issue 13): its verdicts equal those of
counting every service, over random change sequences with specs deleted, services emptied and
catalogs compared out of order (each target's baseline differs)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from lbgen.core.guard import Verdict, _names, check_drop
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog
from lbgen.core.settings import Guard
from tests.unit.fragment_cases import catalog_of, catalogs, changes


def reference(previous: Catalog, new: Catalog, guard: Guard, health: frozenset[str]) -> Verdict:
    """Every service counted (the guard before issue 13)."""
    had, has = {s.name for s in previous.services if s.spec}, {s.name for s in new.services if s.spec}
    gone = had - has if has or not had else set()
    before = {s.name: len(s.served(health)) for s in previous.services if s.name not in gone}
    after = {s.name: len(s.served(health)) for s in new.services if s.name not in gone}
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
    return Verdict(True) if not held else Verdict(False, "; ".join(problems), frozenset(held))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_counting_only_changed_services_gives_the_same_verdicts(data: st.DataObject) -> None:
    guard = Guard(max_drop=data.draw(st.sampled_from((0.0, 0.3, 0.5, 0.9))), to_zero=data.draw(st.booleans()))
    health = data.draw(st.sampled_from((DEFAULT_SERVED_HEALTH, frozenset({"healthy"}))))
    services = data.draw(catalogs())
    seen = [catalog_of(services, 1)]
    for revision in range(2, data.draw(st.integers(2, 8))):
        services = data.draw(changes(services))
        new = catalog_of(services, revision)
        previous = data.draw(st.sampled_from(seen))  # the last one, or an older target's baseline
        assert check_drop(previous, new, guard, health) == reference(previous, new, guard, health)
        seen.append(new)
