"""The bounded renderer with its real forked worker (issues 10 and 13): templates that never end,
recurse or grow without end are refused with one line naming the template; normal renders are
unchanged; a worker that dies, times out or runs out of memory is replaced, and the next render
is right again."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from lbgen.adapters import bounded_render
from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.adapters.template_file import read_template
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.errors import RenderLimit, TemplateError
from tests.unit.catalogs import ROOT, TEMPLATES, example_catalog, tricky_catalog
from tests.unit.test_render import GOLDEN_VARS

pytestmark = pytest.mark.integration

EMPTY = Catalog(revision=3, services=())
# The inner loop reads `a`: else the fragment cache (issue 13) renders it once and reuses it.
LOOP = "{% for a in range(100000) %}{% for b in range(100000) %}{% if a < b < 0 %}{% endif %}{% endfor %}{% endfor %}"
RECURSE = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
HUGE = "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}-{{ b }} padding{% endfor %}{% endfor %}"


def target(kind: str = "generic", **limits: Any) -> Target:
    return Target(name="t", template="/srv/t.j2", dest="/dev/null", kind=kind, **limits)


def bounded(source: str, catalog: Catalog = EMPTY, **limits: Any) -> str:
    renderer = BoundedRenderer()
    try:
        return renderer.render(source, catalog, target(**limits), DEFAULT_SERVED_HEALTH)
    finally:
        renderer.close()


def _no_children_left() -> bool:
    """No forked copy of this process (a worker) is left, running or unreaped; other children (etcd) may be."""
    return not _workers()


def _workers() -> set[int]:
    """This process's forked copies (render workers), running or unreaped; not its other children."""
    me = Path("/proc/self/cmdline").read_bytes()
    pids = [c for task in Path("/proc/self/task").iterdir() for c in (task / "children").read_text().split()]
    return {int(pid) for pid in pids if _cmdline(pid) in (me, b"")}


def _pid_and_endpoints(source: str, catalog: Catalog, target: Target, served_health: frozenset[str]) -> str:
    return f"{os.getpid()} {catalog.endpoint_count}"


@pytest.mark.parametrize("endpoints", [2, 3])
def test_a_worker_forked_ahead_takes_a_small_catalog_and_leaves_a_big_one(
        endpoints: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lbgen render` forks its worker before it reads the registry (issue 13); a catalog over
    AHEAD_MAX_ENDPOINTS is cheaper inherited by a new fork than pickled to that worker."""
    monkeypatch.setattr(bounded_render, "AHEAD_MAX_ENDPOINTS", 2)
    catalog = Catalog(5, (Service("web", {}, tuple(Endpoint(f"e{i}", "127.0.0.1", 80 + i) for i in range(endpoints))),))
    renderer = BoundedRenderer(render_fn=_pid_and_endpoints)
    try:
        renderer.fork_ahead()
        ahead = _workers()
        pid, count = renderer.render("x", catalog, target(), DEFAULT_SERVED_HEALTH).split()
        assert int(count) == endpoints  # the whole catalog, sent or inherited
        assert (int(pid) in ahead) is (endpoints <= 2)
        assert len(ahead) == 1 and _workers() == {int(pid)}  # a worker left behind is ended
    finally:
        renderer.close()
    assert _no_children_left()


def _cmdline(pid: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()  # empty for a zombie
    except OSError:
        return None


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
@pytest.mark.parametrize("catalog", [example_catalog, tricky_catalog], ids=["example", "tricky"])
@pytest.mark.parametrize("ahead", [False, True], ids=["inherited", "forked-ahead"])
def test_default_templates_render_byte_identical(kind: str, catalog: Any, ahead: bool) -> None:
    """Whether the worker inherits the catalog (forked with the job) or is sent it (forked ahead)."""
    source = (ROOT / "templates" / TEMPLATES[kind]).read_text()
    the_target = Target(name=kind, template=TEMPLATES[kind], dest="/dev/null", kind=kind, vars=GOLDEN_VARS[kind])
    expected = render(source, catalog(), the_target, DEFAULT_SERVED_HEALTH)
    renderer = BoundedRenderer()
    if ahead:
        renderer.fork_ahead()
    got = renderer.render(source, catalog(), the_target, DEFAULT_SERVED_HEALTH)
    again = renderer.render(source, catalog(), the_target, DEFAULT_SERVED_HEALTH)  # in the worker, told no change
    renderer.close()
    assert got == expected and again == expected


def test_non_ascii_and_lone_surrogates_come_back_unchanged() -> None:
    assert bounded("é ✓ {{ '\\ud800' }} {{ revision }}\n") == "é ✓ \ud800 3\n"


@pytest.mark.parametrize("source, limits, message, limit", [
    (LOOP, {"render_timeout": 0.5}, "/srv/t.j2: render stopped after render_timeout (0.5s)", True),
    (RECURSE, {}, "/srv/t.j2: recursion too deep", False),
    (HUGE, {"render_memory": 16 * 1024**2}, "/srv/t.j2: the render needs more than render_memory (16 MiB)", True),
], ids=["loop", "recursion", "huge-output"])
def test_unbounded_templates_are_refused_in_one_line(source: str, limits: dict[str, Any], message: str,
                                                     limit: bool) -> None:
    with pytest.raises(TemplateError) as raised:
        bounded(source, **limits)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, RenderLimit) == limit  # a limit is not retried on a timer
    assert "\n" not in str(raised.value)
    assert _no_children_left()


def test_template_errors_keep_their_message() -> None:
    with pytest.raises(TemplateError, match=r"^/srv/t.j2:1: UndefinedError: 'nope' is undefined$"):
        bounded("{{ nope }}")


def test_output_larger_than_the_budget_is_refused_unread() -> None:
    big = "x" * (8 * 1024**2)  # made before the fork: the child's memory limit does not see it
    renderer = BoundedRenderer(lambda *args: big)
    with pytest.raises(RenderLimit, match="output larger than render_memory"):
        renderer.render("", EMPTY, target(render_memory=4 * 1024**2), DEFAULT_SERVED_HEALTH)


def test_a_crashing_child_is_one_line() -> None:
    renderer = BoundedRenderer(lambda *args: os.kill(os.getpid(), signal.SIGKILL))  # type: ignore[arg-type,return-value]
    with pytest.raises(TemplateError, match=r"^/srv/t.j2: the render process killed by SIGKILL"):
        renderer.render("", EMPTY, target(), DEFAULT_SERVED_HEALTH)


def test_close_interrupts_a_render_in_progress_and_refuses_later_ones() -> None:
    renderer = BoundedRenderer()
    errors: list[str] = []

    def run() -> None:
        try:
            renderer.render(LOOP, EMPTY, target(render_timeout=60), DEFAULT_SERVED_HEALTH)
        except TemplateError as e:
            errors.append(str(e))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        while not renderer._workers and thread.is_alive():
            thread.join(0.01)
    finally:
        renderer.close()
        thread.join(10)
    assert not thread.is_alive()
    assert errors == ["/srv/t.j2: render interrupted: lbgen is stopping"]
    with pytest.raises(TemplateError, match="not rendered: lbgen is stopping"):
        renderer.render("x", EMPTY, target(), DEFAULT_SERVED_HEALTH)
    assert _no_children_left()


def test_includes_resolve_in_the_child(tmp_path: Path) -> None:
    (tmp_path / "part.j2").write_text("part {{ revision }}\n")
    (tmp_path / "main.j2").write_text("main\n{% include 'part.j2' %}")
    the_target = Target(name="t", template=str(tmp_path / "main.j2"), dest="/dev/null", kind="generic")
    source = read_template(str(tmp_path / "main.j2"))
    renderer = BoundedRenderer()
    assert renderer.render(source, EMPTY, the_target, DEFAULT_SERVED_HEALTH) == "main\npart 3\n"
    (tmp_path / "part.j2").write_text("part {{ revision }} edited\n")  # seen by the worker at its next render
    assert renderer.render(source, EMPTY, the_target, DEFAULT_SERVED_HEALTH) == "main\npart 3 edited\n"
    renderer.close()
