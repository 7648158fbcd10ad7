"""The fragment cache (issue 13): byte-identical text at every step of random change sequences,
for the shipped templates (HAProxy with and without `previous_slots`) and templates that must
fall back, in process; what qualifies and what does not; hits happen where they should."""

from __future__ import annotations

import difflib
from typing import Any, Callable

import jinja2
import pytest
from hypothesis import given, settings, strategies as st

from lbgen.core import fragments as frag
from lbgen.core.fragment_cache import FragmentCache, _digest, _Keys, _Unkeyable
from lbgen.core.kinds.haproxy.slots import previous_slots
from lbgen.core.model import Endpoint, Service
from lbgen.core.render import _RULES, compiled, fragment_session, render
from lbgen.core.settings import Target
from lbgen.errors import TemplateError
from tests.unit.fragment_cases import CUSTOM, PORTS, catalog_of, catalogs, changes, shipped, sites

VARS = {"stats_socket": "/tmp/s.sock", "status_port": 8999, "min_slots": 2, "extra": "x", "lua_dir": "/tmp/lua"}


def _target(kind: str, template: str, runtime: bool = False) -> Target:
    return Target(name=template, template=template, dest="/dev/null", kind=kind, vars=VARS, runtime=runtime)


def diff(expected: str, got: str) -> str:
    return "\n".join(difflib.unified_diff(expected.splitlines(), got.splitlines(), "uncached", "cached", lineterm=""))


def _outcome(make: Callable[[], str]) -> str:
    try:
        return make()
    except TemplateError as e:
        return f"error: {e}"


def _steps(kind: str, source: str, template: str, keep_slots: bool, runtime: bool = False,
           ports: tuple[int, ...] = PORTS) -> Callable[..., None]:
    """A property: over a random catalog and changes, cached text == uncached text, every step.
    With one port, the random services move in and out of a port of 20 unchanging sites."""

    @settings(max_examples=40, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        target, cache = _target(kind, template, runtime), FragmentCache()
        services = data.draw(catalogs(ports=ports))
        fixed = sites(ports[0], 20) if len(ports) == 1 else {}
        last = ""
        for revision in range(1, data.draw(st.integers(1, 6)) + 1):
            catalog = catalog_of({**fixed, **services}, revision)
            context = {"previous_slots": previous_slots(last, catalog)} if keep_slots else None
            expected = _outcome(lambda: render(source, catalog, target, kind_context=context))
            session = fragment_session(cache)
            got = _outcome(lambda: render(source, catalog, target, kind_context=context, fragments=session))
            assert got == expected, diff(expected, got)
            if not got.startswith("error: "):
                session.commit()
                last = got
            services = data.draw(changes(services, ports=ports))

    return check


@pytest.mark.parametrize("kind, keep_slots, runtime, ports", [
    ("nginx", False, False, PORTS), ("nginx", False, True, PORTS), ("haproxy", False, False, PORTS),
    ("haproxy", True, False, PORTS), ("nginx", False, False, PORTS[:1]), ("nginx", False, True, PORTS[:1]),
    ("haproxy", True, False, PORTS[:1])],
    ids=["nginx", "nginx-runtime", "haproxy", "haproxy-previous-slots", "nginx-one-port", "nginx-runtime-one-port",
         "haproxy-one-port"])
def test_shipped_templates_render_identically_with_the_cache(kind: str, keep_slots: bool, runtime: bool,
                                                             ports: tuple[int, ...]) -> None:
    _steps(kind, shipped(kind), f"{kind}.j2", keep_slots, runtime, ports)()


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_templates_that_fall_back_render_identically(name: str) -> None:
    _steps("generic", CUSTOM[name], f"{name}.j2", False)()


def _fragments(source: str) -> tuple[frag.Fragment, ...]:
    template = compiled(source, _target("generic", "t.j2"), fragments=True)
    call = template.globals[frag.CALL]
    return call.__closure__[0].cell_contents  # type: ignore[no-any-return]


L = "{% for e in s.endpoints %}{{ e.id }}{% endfor %}"  # an inner loop: only such bodies are rewritten


@pytest.mark.parametrize("source, rewritten", [
    ("{% for s in services %}{{ s.name }}{% endfor %}", []),  # a one-line body: cheaper to render
    ("{% for s in services %}{{ s.name }}" + L + "{% endfor %}", [("s",)]),
    ("{% for s in services %}{{ loop.index }}" + L + "{% endfor %}", []),
    ("{% for s in services recursive %}{{ s.name }}" + L + "{% endfor %}", []),
    ("{% set ns = namespace(a=1) %}{% for s in services %}{% set ns.a = 2 %}" + L + "{% endfor %}", []),
    ("{% for s in services %}{% include 'x' %}" + L + "{% endfor %}", []),
    ("{% for s in services %}{{ services | random }}" + L + "{% endfor %}", []),
    ("{% for s in services %}{{ lipsum() }}" + L + "{% endfor %}", [("lipsum", "s")]),  # lipsum: never keyed
    ("{% for s in services %}{% macro m() %}{% endmacro %}" + L + "{% endfor %}", []),
    ("{% for s in services %}{{ y }}{% set y = 1 %}" + L + "{% endfor %}", []),
    ("{% for s in services %}{% for e in s.endpoints %}{{ loop.index }}{% endfor %}{% endfor %}", [("s",)]),
    ("{% for s in services %}{{ loop.index }}{% for e in s.endpoints %}{% for t in e.tags %}{{ t }}{% endfor %}"
     "{% endfor %}{% endfor %}", [("e",)]),
    ("{% for s in services %}{{ s.endpoints | map('upper') | list }}" + L + "{% endfor %}", [("s",)]),
    ("{% for s in services %}{{ s.endpoints | map('random') | list }}" + L + "{% endfor %}", []),
], ids=["one-line", "plain", "loop", "recursive", "namespace-set", "include", "random", "lipsum", "macro",
        "read-then-set", "inner-loop-var", "outer-loop-var", "map-pure", "map-random"])
def test_which_loops_are_rewritten(source: str, rewritten: list[tuple[str, ...]]) -> None:
    assert [f.names for f in _fragments(source)] == rewritten


def test_lipsum_renders_uncached_every_time() -> None:
    with pytest.raises(_Unkeyable):
        _Keys(_RULES).key(jinja2.sandbox.ImmutableSandboxedEnvironment().globals["lipsum"])


def test_chains_key_only_what_is_read() -> None:
    [fragment] = _fragments("{% for x in xs %}{{ listener.port }}{{ vars.a }}{{ x }}"
                            "{% for y in x %}{% endfor %}{% endfor %}")
    assert dict(zip(fragment.names, fragment.chains)) == {
        "listener": (((True, "port"),),), "vars": (((True, "a"),),), "x": None}


def test_a_context_reader_without_a_declaration_is_not_keyed() -> None:
    @jinja2.pass_context
    def reads(context: Any) -> str:
        return str(context.get("secret"))

    with pytest.raises(_Unkeyable):
        _Keys(_RULES).key(reads)


@pytest.mark.parametrize("a, b", [(1, True), (1, 1.0), (0.0, -0.0), ("a", frag.FragmentText("a")),
                                  ({"a": 1, "b": 2}, {"b": 2, "a": 1}), ((1,), [1])],
                         ids=["int-bool", "int-float", "zero-sign", "str-subclass", "dict-order", "tuple-list"])
def test_values_that_compare_equal_but_render_differently_have_different_keys(a: Any, b: Any) -> None:
    keys = _Keys(_RULES)
    try:
        assert keys.key(a) != keys.key(b)
    except _Unkeyable:
        pass  # a type the key does not take renders uncached: just as safe


@pytest.mark.parametrize("runtime", [False, True], ids=["reload", "lua-balancer"])
def test_one_changed_service_renders_its_upstream_and_its_server_block(runtime: bool) -> None:
    """With the Lua balancer (`runtime` on) too: its loops key the Lua-balanced names by a digest,
    not the endpoint block (which changes with every endpoint), so the other blocks are reused."""
    services = {f"s{i}": _svc(f"s{i}", 8080 + i % 2) for i in range(6)}
    target, cache = _target("nginx", "nginx.j2", runtime=runtime), FragmentCache()
    session = fragment_session(cache)
    render(shipped("nginx"), catalog_of(services, 1), target, fragments=session)
    session.commit()
    services["s2"] = _svc("s2", 8080, weight=3)
    session = fragment_session(cache)
    text = render(shipped("nginx"), catalog_of(services, 2), target, fragments=session)
    assert text == render(shipped("nginx"), catalog_of(services, 2), target)
    # new: its upstream, its port's listener and its own server block; hit: the 5 other upstreams,
    # the other port, and the other server blocks of its port (2 named, 1 default)
    assert (len(session.new), len(session.hits)) == (3, 9)


@pytest.mark.parametrize(("one", "other"), [
    ({"a", "b"}, {"a", "c"}), ({"a", "b"}, {"a"}), ({"a", "b"}, {'a", "b'}),
    ({"a", "b\x00c"}, {"a\x00b", "c"}),  # as many names, the same characters in order
])
def test_sets_of_names_are_keyed_by_their_members(one: set[str], other: set[str]) -> None:
    assert _digest(frozenset(one)) == _digest(frozenset(sorted(one, reverse=True)))
    assert _digest(frozenset(one)) != _digest(frozenset(other))


def test_a_failed_render_stores_nothing() -> None:
    services = {"a": _svc("a", 8080)}
    target, cache = _target("generic", "f.j2"), FragmentCache()
    session = fragment_session(cache)
    with pytest.raises(TemplateError):
        render("{% for s in services %}{{ s.name }}{% endfor %}{{ nope.x }}", catalog_of(services, 1), target,
               fragments=session)
    assert len(cache) == 0


def _svc(name: str, port: int, weight: int = 1) -> Service:
    return Service(name, {"listen": port, "hosts": [f"{name}.test"]},
                   (Endpoint(id=f"n1.{name}", address="10.0.0.1", port=1000, weight=weight, health="healthy"),))


def test_slots_read_through_a_listener_follow_previous_slots() -> None:
    """A listener is keyed by identity, and its services' previous slots are not in that key: the
    body renders uncached, so a change of `previous_slots` alone still shows."""
    endpoints = tuple(Endpoint(id=f"n{i}.db", address="10.0.0.1", port=1000 + i, health="healthy") for i in range(2))
    services = {"db": Service("db", {"listen": 9000, "mode": "tcp"}, endpoints)}
    source, target, cache = CUSTOM["slots_by_listener"], _target("haproxy", "l.j2"), FragmentCache()
    for previous in ({}, {"db": {"n0.db": 2, "n1.db": 1}}, {"db": {"n0.db": 1, "n1.db": 2}}):
        catalog, context = catalog_of(services, 1), {"previous_slots": previous}
        session = fragment_session(cache)
        got = render(source, catalog, target, kind_context=context, fragments=session)
        session.commit()
        assert got == render(source, catalog, target, kind_context=context)


def test_unused_entries_are_dropped_once_they_outnumber_the_used_ones() -> None:
    """A one-service change keeps the old texts for a while (a sweep walks every entry); a render
    that uses few of them sweeps the rest, so memory stays within about two configs."""
    services = {f"s{i:02d}": _svc(f"s{i:02d}", 8080) for i in range(60)}
    target, cache = _target("nginx", "nginx.j2"), FragmentCache()

    def rendered(revision: int) -> int:
        session = fragment_session(cache)
        render(shipped("nginx"), catalog_of(services, revision), target, fragments=session)
        session.commit()
        return len(session.hits) + len(session.new)

    used = rendered(1)
    services["s07"] = _svc("s07", 8080, weight=2)
    assert rendered(2) == used and len(cache) > used  # the old upstream and server block are kept
    services = {name: services[name] for name in ("s01", "s02")}
    assert rendered(3) == len(cache)
