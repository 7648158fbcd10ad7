"""The fragment cache across the bounded renderer's forks (issue 13): the child renders with the
parent's cache, sends back what it rendered, the parent keeps it; the text is byte-identical to an
uncached in-process render at every step, and a failed render keeps nothing."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from lbgen.adapters.bounded_render import BoundedRenderer, _fragments
from lbgen.adapters.kinds import kind_adapter
from lbgen.core.fragment_cache import Delta
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Service
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.errors import TemplateError
from tests.unit.fragment_cases import CUSTOM, catalog_of, catalogs, changes, shipped
from tests.unit.test_fragments import VARS, diff


def _target(kind: str, dest: Path) -> Target:
    return Target(name=kind, template=f"{kind}.j2", dest=str(dest), kind=kind, vars=VARS)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_bounded_renders_are_identical_with_the_cache_across_forks(kind: str, tmp_path: Path) -> None:
    source, target = shipped(kind), _target(kind, tmp_path / "live.cfg")

    @settings(max_examples=12, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        renderer = BoundedRenderer()
        make_live = kind_adapter(kind).live_context
        live = make_live() if make_live else None  # the same reader of the live config, beside it
        services = data.draw(catalogs())
        for revision in range(1, data.draw(st.integers(2, 4)) + 1):
            catalog = catalog_of(services, revision)
            context = live.context(target, catalog) if live else None
            expected = render(source, catalog, target, kind_context=context)
            got = renderer.render(source, catalog, target, DEFAULT_SERVED_HEALTH)
            assert got == expected, diff(expected, got)
            if live:
                live.rendered(target, expected)
            services = data.draw(changes(services))

    check()


def test_a_bounded_render_that_fails_keeps_the_cache_as_it_was(tmp_path: Path) -> None:
    source = CUSTOM["fails_on_tcp"]
    target = Target(name="g", template="g.j2", dest=str(tmp_path / "g"), vars=VARS)
    renderer = BoundedRenderer()
    ok = {"a": _service("a", {})}
    renderer.render(source, catalog_of(ok, 1), target, DEFAULT_SERVED_HEALTH)
    cache = renderer._fragments["g"]
    kept = dict(cache.entries)
    assert kept
    with pytest.raises(TemplateError):
        renderer.render(source, catalog_of({**ok, "b": _service("b", {"mode": "tcp"})}, 2), target,
                        DEFAULT_SERVED_HEALTH)
    assert cache.entries == kept


class _Session:
    def delta(self) -> Delta:
        return [], [((1, "k"), "x" * 1000, ())]


@pytest.mark.parametrize("text, budget, sent", [("a" * 100, 2000, True), ("a" * 1000, 1100, False),
                                                ("é" * 100, 1300, True), ("é" * 150, 1300, False)],
                         ids=["fits", "too-big", "utf8-fits", "utf8-bytes-too-big"])
def test_fragments_are_sent_only_within_render_memory(text: str, budget: int, sent: bool) -> None:
    data = _fragments(_Session(), text, budget)  # type: ignore[arg-type]
    assert bool(data) is sent
    if sent:
        assert pickle.loads(data) == _Session().delta()


def _service(name: str, spec: dict[str, object]) -> Service:
    return Service(name, spec, ())
