"""The fragment cache in the bounded renderer's worker (issue 13): the worker keeps it from one
render to the next, fed only the services that changed; the text is byte-identical to an uncached
in-process render at every step, and a failed render changes nothing for the next."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.adapters.kinds import kind_adapter
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Service
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.errors import TemplateError
from tests.unit.fragment_cases import CUSTOM, catalog_of, catalogs, changes, shipped
from tests.unit.test_fragments import VARS, diff


def _target(kind: str, dest: Path) -> Target:
    return Target(name=kind, template=f"{kind}.j2", dest=str(dest), kind=kind, vars=VARS)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_bounded_renders_are_identical_with_the_cache_in_the_worker(kind: str, tmp_path: Path) -> None:
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
        renderer.close()

    check()


def test_a_bounded_render_that_fails_changes_nothing_for_the_next(tmp_path: Path) -> None:
    """A template error is an answer: the same worker renders the next catalog, byte-identical."""
    source = CUSTOM["fails_on_tcp"]
    target = Target(name="g", template="g.j2", dest=str(tmp_path / "g"), vars=VARS)
    renderer = BoundedRenderer()
    ok = {"a": _service("a", {}), "c": _service("c", {})}
    try:
        renderer.render(source, catalog_of(ok, 1), target, DEFAULT_SERVED_HEALTH)
        [worker] = renderer._workers
        with pytest.raises(TemplateError):
            renderer.render(source, catalog_of({**ok, "b": _service("b", {"mode": "tcp"})}, 2), target,
                            DEFAULT_SERVED_HEALTH)
        later = catalog_of({**ok, "d": _service("d", {})}, 3)
        assert renderer.render(source, later, target, DEFAULT_SERVED_HEALTH) == render(source, later, target)
        assert renderer._workers == {worker}
    finally:
        renderer.close()


def _service(name: str, spec: dict[str, object]) -> Service:
    return Service(name, spec, ())
