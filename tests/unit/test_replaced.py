"""`model.replaced`: what changed between two sequences of distinct objects, by identity, against
the plain set difference it must equal whatever the edits (replacements, insertions, removals,
moves)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.core.model import Service, replaced

POOL = [Service(f"s{i:02d}") for i in range(40)]  # distinct objects; equal names would not matter


def reference(before: list[Service], after: list[Service]) -> tuple[set[int], set[int]]:
    old, new = {id(s) for s in before}, {id(s) for s in after}
    return old - new, new - old


@settings(max_examples=300, deadline=None)
@given(before=st.lists(st.sampled_from(POOL), unique_by=id, max_size=20),
       after=st.lists(st.sampled_from(POOL), unique_by=id, max_size=20))
def test_replaced_is_the_set_difference_by_identity(before: list[Service], after: list[Service]) -> None:
    gone, came = replaced(tuple(before), tuple(after))
    assert ({id(s) for s in gone}, {id(s) for s in came}) == reference(before, after)
    assert len(gone) == len({id(s) for s in gone}) and len(came) == len({id(s) for s in came})


def test_an_equal_but_new_object_is_a_change_and_a_moved_one_is_not() -> None:
    a, b, c = POOL[:3]
    b2 = Service(b.name)
    assert replaced((a, b, c), (a, b2, c)) == ([b], [b2])
    assert replaced((a, b, c), (POOL[5], a, b, c)) == ([], [POOL[5]])
    assert replaced((a, b, c), (c, b, a)) == ([], [])
    assert replaced((a, b, c), (a, c)) == ([b], [])

