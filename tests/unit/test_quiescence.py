"""Quiescence: consul-template's min:max debounce, driven by a table of (time, event) steps."""

from __future__ import annotations

import pytest

from lbgen.core.quiescence import Quiescence
from lbgen.core.settings import Wait

# Each step: ("change", t) notes a change at t; ("due", t, expected) asks whether a render is due at t
# (and, when it is, renders); ("sleep", t, expected) checks the loop's timeout at t.
CASES = {
    "quiet-after-min": (Wait(1, 4), [("change", 0), ("due", 0.5, False), ("due", 1.0, True), ("due", 1.5, False)]),
    "burst-extends-min": (Wait(1, 4), [("change", 0), ("change", 0.8), ("due", 1.0, False), ("due", 1.8, True)]),
    "max-caps-a-burst": (Wait(1, 4), [*[("change", t / 2) for t in range(8)], ("due", 3.9, False),
                                      ("change", 3.95), ("due", 4.0, True)]),
    "window-restarts-after-render": (Wait(1, 4), [("change", 0), ("due", 1, True), ("change", 10),
                                                  ("due", 10.9, False), ("due", 11, True)]),
    "off-renders-each-change": (Wait(0, 0), [("change", 5), ("due", 5, True), ("change", 6), ("due", 6, True)]),
    "nothing-pending": (Wait(1, 4), [("due", 100, False), ("sleep", 100, None)]),
    "sleep-until-min": (Wait(1, 4), [("change", 0), ("sleep", 0.25, 0.75)]),
    "sleep-until-max": (Wait(1, 4), [("change", 0), ("change", 1), ("change", 2), ("change", 3.5),
                                     ("sleep", 3.5, 0.5)]),
    "overdue-sleeps-zero": (Wait(1, 4), [("change", 0), ("sleep", 7, 0.0), ("due", 7, True)]),
}


@pytest.mark.parametrize("wait, steps", CASES.values(), ids=CASES.keys())
def test_quiescence(wait: Wait, steps: list[tuple]) -> None:
    q = Quiescence(wait)
    for step in steps:
        if step[0] == "change":
            q.note(step[1])
        elif step[0] == "sleep":
            timeout, expected_timeout = q.timeout(step[1]), step[2]
            assert (timeout is None) == (expected_timeout is None), step
            assert timeout == pytest.approx(expected_timeout), step
        else:
            _, now, expected = step
            assert q.due(now) is expected, step
            if expected:
                q.fired()
                assert not q.pending and q.deadline() is None


def test_deadline_is_the_earlier_of_quiet_and_cap() -> None:
    q = Quiescence(Wait(0.1, 1.0))
    q.note(10.0)
    assert q.deadline() == pytest.approx(10.1)
    q.note(10.95)
    assert q.deadline() == pytest.approx(11.0)


def test_a_settled_change_is_due_at_once_and_the_next_window_waits_again() -> None:
    q = Quiescence(Wait(2.0, 10.0))
    q.note(9.0)
    q.settled(10.0)
    assert q.due(10.0) and q.timeout(10.0) == 0.0
    q.fired()
    q.note(11.0)
    assert not q.due(11.0)
    assert q.deadline() == pytest.approx(13.0)
