"""The quarantine search and the mixed catalog (lbgen/core/quarantine.py), with a fake checker."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.quarantine import (
    changed_services, checker_reason, find_culprits, hold_services, probe_budget,
)


def svc(name: str, *ports: int) -> Service:
    return Service(name, {"listen": 80}, tuple(Endpoint(f"e{p}", "127.0.0.1", p) for p in ports))


def cat(revision: int, *services: Service) -> Catalog:
    return Catalog(revision, tuple(sorted(services, key=lambda s: s.name)))


OLD = cat(5, svc("api", 1), svc("web", 2), svc("gone", 3))
NEW = cat(9, svc("api", 1), svc("web", 2, 4), svc("fresh", 5))


class FakeChecker:
    """Refuses a config while any of `bad` is released (not held); counts its probes."""

    def __init__(self, bad: set[str]) -> None:
        self.bad = bad
        self.probes: list[frozenset[str]] = []

    def __call__(self, held: frozenset[str]) -> str | None:
        self.probes.append(held)
        released = sorted(self.bad - held)
        return f"[emerg] host not found in upstream of {released[0]}" if released else None


@pytest.mark.parametrize("applied, new, expected", [
    (OLD, NEW, {"web", "gone", "fresh"}),
    (None, NEW, {"api", "web", "fresh"}),
    (NEW, NEW, set()),
    (OLD, cat(9), {"api", "web", "gone"}),
], ids=["changed-added-removed", "nothing-applied-yet", "identical", "all-removed"])
def test_changed_services(applied: Catalog | None, new: Catalog, expected: set[str]) -> None:
    assert changed_services(applied, new) == expected


@pytest.mark.parametrize("held, expected", [
    (set(), NEW.services),
    ({"web"}, (svc("api", 1), svc("fresh", 5), svc("web", 2))),
    ({"fresh"}, (svc("api", 1), svc("web", 2, 4))),
    ({"gone"}, (svc("api", 1), svc("fresh", 5), svc("gone", 3), svc("web", 2, 4))),
    ({"web", "fresh", "gone"}, (svc("api", 1), svc("gone", 3), svc("web", 2))),
], ids=["none", "changed-service-at-its-old-state", "new-service-held-as-absent",
        "removed-service-kept", "every-change-held"])
def test_hold_services_builds_the_mixed_catalog(held: set[str], expected: tuple[Service, ...]) -> None:
    mixed = hold_services(NEW, OLD, held)
    assert mixed.services == expected
    assert mixed.revision == NEW.revision


def test_hold_services_with_nothing_applied_leaves_held_services_out() -> None:
    assert hold_services(NEW, None, {"web"}).services == (svc("api", 1), svc("fresh", 5))


@pytest.mark.parametrize("bad, changed, found", [
    ({"b"}, "abcdefgh", {"b"}),
    ({"a", "h"}, "abcdefgh", {"a", "h"}),
    ({"x"}, "x", {"x"}),
    ({"c", "d", "e"}, "abcdefg", {"c", "d", "e"}),
], ids=["one-of-eight", "two-at-the-ends", "the-only-change", "three-in-a-row"])
def test_find_culprits_finds_exactly_the_bad_services(bad: set[str], changed: str, found: set[str]) -> None:
    checker = FakeChecker(bad)
    result = find_culprits(frozenset(changed), checker, checker(frozenset()))
    assert result is not None and set(result.held) == found
    assert all(f"of {name}" in reason for name, reason in result.held.items()), result.held
    assert not result.exhausted
    assert result.probes == len(set(checker.probes)) - 1  # the first call was the full check


def test_a_fault_outside_the_changed_services_is_tied_to_no_service() -> None:
    checker = FakeChecker({"unchanged"})
    assert find_culprits(frozenset("abc"), checker, "template error") is None
    assert checker.probes == [frozenset("abc")], "one probe: holding every change still fails"


def test_a_suspect_still_bad_costs_one_probe() -> None:
    changed = frozenset(f"s{i}" for i in range(1000))
    checker = FakeChecker({"s500"})
    result = find_culprits(changed, checker, "refused", suspects=frozenset({"s500", "gone-since"}))
    assert result is not None and list(result.held) == ["s500"]
    assert checker.probes == [frozenset({"s500"})]


def test_a_fixed_suspect_falls_back_to_the_full_search() -> None:
    checker = FakeChecker({"b"})
    result = find_culprits(frozenset("abcd"), checker, "refused", suspects=frozenset("a"))
    assert result is not None and list(result.held) == ["b"]


def test_the_budget_holds_every_service_still_suspected() -> None:
    checker = FakeChecker({"a", "b", "c", "d"})
    result = find_culprits(frozenset("abcdefgh"), checker, "refused", budget=4)
    assert result is not None and result.exhausted and result.probes == 4
    assert {"a", "b", "c", "d"} <= set(result.held), "what is held must pass the check"
    assert checker(frozenset(result.held)) is None
    assert any("probe budget of 4" in reason for reason in result.held.values())


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=300).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1, max_size=min(3, n)))))
def test_any_bad_services_among_n_are_found_exactly_within_the_bound(case: tuple[int, set[int]]) -> None:
    n, bad_ids = case
    changed = frozenset(f"svc{i:03d}" for i in range(n))
    bad = {f"svc{i:03d}" for i in bad_ids}
    checker = FakeChecker(bad)
    result = find_culprits(changed, checker, checker(frozenset()))
    assert result is not None and set(result.held) == bad
    bound = 1 + len(bad) * (math.ceil(math.log2(n)) + 1)
    assert result.probes <= bound <= probe_budget(n)


@pytest.mark.parametrize("output, error, reason", [
    ("2026/12/03 15:58:30 [emerg] 27406#27406: host not found in upstream \"x.invalid:80\" in /e/n.conf:34\n"
     "nginx: configuration file /e/n.conf test failed\n", "nginx -t exited 1: test failed",
     "[emerg] host not found in upstream \"x.invalid:80\" in /e/n.conf:34"),
    ("nginx: [emerg] invalid IPv6 address in upstream \"[fe80::1%lo]:80\" in /e/n.conf:9\n", "",
     "nginx: [emerg] invalid IPv6 address in upstream \"[fe80::1%lo]:80\" in /e/n.conf:9"),
    ("[NOTICE]   (1) : haproxy version\n[ALERT]    (28150) : config : parsing [/e/h.cfg:35]: too many words\n"
     "[ALERT]    (28150) : config : Fatal errors found in configuration.\n", "haproxy -c exited 1",
     "[ALERT] config : parsing [/e/h.cfg:35]: too many words"),
    ("", "check timed out: no output", "check timed out: no output"),
    ("[ALERT]    (9) : config : parsing [/etc/haproxy/.haproxy.cfg.k2j4_x9q.lbgen:35]: too many words\n", "",
     "[ALERT] config : parsing [/etc/haproxy/haproxy.cfg (candidate):35]: too many words"),
    ("", "haproxy -c -f /e/.h.cfg.abcd1234.lbgen exited 1: no output", "haproxy -c -f /e/h.cfg (candidate) exited 1: no output"),
    ("[emerg] " + "x" * 1000, "", "[emerg] " + "x" * 289 + "..."),
], ids=["nginx", "nginx-q", "haproxy", "no-output", "staged-file", "staged-file-in-error", "cut"])
def test_checker_reason_is_one_line(output: str, error: str, reason: str) -> None:
    assert checker_reason(output, error) == reason
