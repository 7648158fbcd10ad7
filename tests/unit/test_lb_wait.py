"""`lagging`: which LB nodes keep a revision from being served, named for the deploy's messages."""

from __future__ import annotations

import pytest

from lbgen.core.lb_wait import lagging

CASES = [
    ({"a": 9, "b": 10}, {"a", "b"}, {}, []),
    ({"a": 8, "b": 10}, {"a", "b"}, {}, ["a at revision 8"]),
    ({"b": 10}, {"a", "b"}, {}, ["a stopped reporting its status"]),
    ({"a": 12}, {"a"}, {"a/nginx": "refused"}, ["a/nginx holds web back (quarantined: refused)"]),
    ({"b": 3, "a": 2}, {"c"}, {}, ["a at revision 2", "b at revision 3", "c stopped reporting its status"]),
    ({}, set(), {}, []),
]


@pytest.mark.parametrize("revisions, reported, held, expected", CASES,
                         ids=["all-applied", "one-behind", "one-gone", "quarantined", "sorted", "no-nodes"])
def test_lagging(revisions: dict[str, int], reported: set[str], held: dict[str, str], expected: list[str]) -> None:
    assert lagging(revisions, reported, 9, held, "web") == expected
