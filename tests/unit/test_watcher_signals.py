"""The watcher's stop and reload paths (issue 10): a stop during a render applies nothing, a
SIGHUP reload takes new settings and templates or, when the file is broken, keeps the running ones;
a template error shows in `/healthz`."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from msgspec.structs import replace
import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.core.model import Catalog
from lbgen.core.render import render
from lbgen.core.settings import GUARD_OFF, Settings, Target, Wait
from lbgen.errors import ConfigError, RenderLimit, TemplateError
from lbgen.services.watcher import Watcher
from tests.unit.test_watcher import REGISTRY, RecordingApplier, SystemClock, endpoint, key, wait_for

P = "/lbgen"
SETTINGS = Settings(registry=REGISTRY, prefix=P, wait=Wait(0.01, 0.05), guard=GUARD_OFF,
                    targets=(Target(name="lb", template="lb.j2", dest="/unused", vars={"v": "1"}),))


class BlockingRenderer:
    """Renders in-process, except while `block` is set: then it waits until `close()`, as the
    bounded renderer does with a template that never ends."""

    def __init__(self) -> None:
        self.block = False
        self.block_after: int | None = None  # block from the call after this many
        self.calls = 0
        self.finish = False  # after close(): end the blocked render normally (as an in-process one does)
        self.started = threading.Event()
        self.closed = threading.Event()

    def render(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str]) -> str:
        self.calls += 1
        if source == "LOOP":
            raise RenderLimit(f"{target.template}: render stopped after render_timeout (10s): a loop that never ends?")
        if self.block or (self.block_after is not None and self.calls > self.block_after):
            self.started.set()
            self.closed.wait(10)
            if not self.finish:
                raise TemplateError(f"{target.template}: render interrupted: lbgen is stopping")
            self.block, self.block_after = False, None
        return render(source, catalog, target, served_health)

    def close(self) -> None:
        self.closed.set()


class Run:
    """A watcher running in a thread, with the settings file it reloads from."""

    def __init__(self, store: MemoryStore, renderer: BlockingRenderer) -> None:
        self.templates = {"lb.j2": "{% for s in services %}{{ s.name }}{% endfor %} v={{ vars.v }}"}
        self.file: Settings | Exception = SETTINGS
        self.store = store
        self.applier = RecordingApplier()
        self.watcher = Watcher(SETTINGS, store, self.applier, SystemClock(), read_template=self.templates.__getitem__,
                               retry_base=0.01, retry_cap=0.05, renderer=renderer, load_settings=self.load)
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)

    def load(self) -> Settings:
        if isinstance(self.file, Exception):
            raise self.file
        return self.file


@pytest.fixture
def renderer() -> BlockingRenderer:
    return BlockingRenderer()


@pytest.fixture
def run(renderer: BlockingRenderer) -> Iterator[Run]:
    store = MemoryStore()
    store.put(key("web", "a"), endpoint(1))
    running = Run(store, renderer)
    running.thread.start()
    try:
        wait_for(lambda: running.applier.last == "web v=1")
        yield running
    finally:
        running.watcher.stop()
        running.thread.join(5)
        assert not running.thread.is_alive(), "watcher did not stop"


def test_stop_during_a_render_applies_nothing(run: Run, renderer: BlockingRenderer) -> None:
    renderer.block = True
    passes = len(run.applier.passes)
    run.templates["lb.j2"] = "changed"
    run.watcher.templates_changed()
    assert renderer.started.wait(5)
    run.watcher.stop()
    run.thread.join(5)
    assert not run.thread.is_alive()
    assert len(run.applier.passes) == passes
    assert "lb" not in run.watcher.status.errors  # being stopped is not a template error


def test_reload_takes_new_vars_and_templates(run: Run) -> None:
    run.templates["lb.j2"] = "{% for s in services %}{{ s.name }}{% endfor %} w={{ vars.v }}"
    run.file = replace(SETTINGS, targets=(replace(SETTINGS.targets[0], vars={"v": "2"}),))
    run.watcher.reload()
    wait_for(lambda: run.applier.last == "web w=2")
    assert run.watcher.settings.targets[0].vars == {"v": "2"}


def test_a_broken_settings_file_keeps_the_running_settings(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    run.file = ConfigError("lbgen.yaml: targets[0].relaod: unknown setting")
    run.watcher.reload()
    wait_for(lambda: "reload: keeping the running settings" in caplog.text)
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
        "reload: keeping the running settings: lbgen.yaml: targets[0].relaod: unknown setting"]
    assert run.watcher.settings is SETTINGS


def test_a_reload_that_adds_a_target_is_refused(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    run.file = replace(SETTINGS, targets=SETTINGS.targets + (replace(SETTINGS.targets[0], name="two"),))
    run.watcher.reload()
    wait_for(lambda: "adding or removing a target needs a restart" in caplog.text)
    assert run.watcher.settings is SETTINGS


def test_a_template_error_is_a_health_problem_until_it_renders(run: Run) -> None:
    run.templates["lb.j2"] = "{{ nope }}"
    run.watcher.templates_changed()
    wait_for(lambda: bool(run.watcher.problems()))
    assert run.watcher.problems() == ["lb: lb.j2:1: UndefinedError: 'nope' is undefined"]
    run.templates["lb.j2"] = "fixed"
    run.watcher.templates_changed()
    wait_for(lambda: run.applier.last == "fixed")
    wait_for(lambda: run.watcher.problems() == [])


def test_a_render_out_of_time_waits_for_a_change_not_a_timer(run: Run, renderer: BlockingRenderer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    run.templates["lb.j2"] = "LOOP"
    run.watcher.templates_changed()
    wait_for(lambda: "render stopped after render_timeout" in caplog.text)
    assert "render failed, tried again at the next change): lb.j2: render stopped" in caplog.text
    assert "lb" not in run.watcher._retry_at  # the same render would only burn another 10 s
    calls = renderer.calls
    run.watcher.templates_changed()  # a change renders it again
    wait_for(lambda: renderer.calls > calls)
    assert run.watcher.problems() == ["lb: lb.j2: render stopped after render_timeout (10s): a loop that never ends?"]


def test_stop_during_a_quarantine_search_applies_nothing(run: Run, renderer: BlockingRenderer) -> None:
    run.applier.refused = {"bad"}
    passes, live = len(run.applier.passes), dict(run.applier.live)
    renderer.block_after = renderer.calls + 1  # the full render goes through; the search's first probe blocks
    renderer.finish = True  # ... and ends after the stop: the search then has a result to apply
    run.store.put(key("bad", "x"), endpoint(2))  # a service the (fake) checker refuses: the search holds it back
    assert renderer.started.wait(5)
    run.watcher.stop()
    run.thread.join(5)
    assert not run.thread.is_alive()
    assert len(run.applier.passes) == passes + 1 and run.applier.live == live  # only the refused pass
