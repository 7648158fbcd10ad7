"""The registries of LB kinds: the core's rules and the adapters' controls, found by name (issue 11)."""

from __future__ import annotations

import re

import pytest

from lbgen.adapters.kinds import KindAdapter, kind_adapter
from lbgen.core.kinds import LbKind, guess_kind, kind_names, lb_kind
from lbgen.errors import ConfigError


def test_kind_names_lists_every_kind_module_sorted() -> None:
    names = kind_names()
    assert {"generic", "haproxy", "nginx"} <= set(names) and list(names) == sorted(names)
    assert not any(name.startswith("_") for name in names)


@pytest.mark.parametrize("name", kind_names())
def test_every_kind_has_its_rules_and_its_adapter(name: str) -> None:
    assert isinstance(lb_kind(name), LbKind) and lb_kind(name).name == name
    assert isinstance(kind_adapter(name), KindAdapter)


@pytest.mark.parametrize("lookup", [lb_kind, kind_adapter], ids=["core", "adapter"])
def test_an_unknown_kind_is_one_clear_error_naming_the_known_ones(lookup: object) -> None:
    known = re.escape(", ".join(kind_names()))
    with pytest.raises(ConfigError, match=rf"^unknown LB kind 'nosuch' \(known: {known}\)$"):
        lookup("nosuch")  # type: ignore[operator]


@pytest.mark.parametrize("name", ["_private", "kinds", "haproxy.slots", ""])
def test_names_that_are_not_kind_modules_are_unknown(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown LB kind"):
        lb_kind(name)


@pytest.mark.parametrize(("check", "kind"), [
    (("nginx", "-t", "-c", "{staged}"), "nginx"),
    (("/usr/sbin/nginx", "-t"), "nginx"),
    (("haproxy", "-c", "-f", "{staged}"), "haproxy"),
    (("/opt/haproxy/sbin/haproxy", "-c"), "haproxy"),
    (("nginx-debug", "-t"), "generic"),
    (("sh", "-c", "nginx -t"), "generic"),
    ((), "generic"),
], ids=["nginx", "nginx-path", "haproxy", "haproxy-path", "other-program", "via-shell", "none"])
def test_guess_kind_by_the_checker_program(check: tuple[str, ...], kind: str) -> None:
    assert guess_kind(check) == kind


def test_only_the_generic_kind_has_no_built_in_check() -> None:
    assert [n for n in kind_names() if not lb_kind(n).check] == ["generic"]
    assert all("{staged}" in lb_kind(n).check for n in kind_names() if lb_kind(n).check)
