"""The bounded renderer's long-lived worker (issue 13), with real forks: after a worker dies, runs
out of time or memory, or crashes, the next render forks a new one and is right; the catalog it is
fed as changes renders byte-identical to an in-process render; concurrent renders each get a
worker; a renderer dropped or closed leaves no process behind."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.errors import RenderLimit, TemplateError
from tests.integration.test_bounded_render import HUGE, LOOP, RECURSE, _no_children_left
from tests.support.util import wait_until

pytestmark = pytest.mark.integration

GOOD = ("{% for s in services %}{{ s.name }}:{% for e in s.endpoints %} {{ e.port }}{% endfor %}\n{% endfor %}"
        "r{{ revision }}\n")


def target(**limits: Any) -> Target:
    return Target(name="t", template="/srv/t.j2", dest="/dev/null", kind="generic", **limits)


def catalog(revision: int, *names: str, port: int = 80) -> Catalog:
    return Catalog(revision, tuple(Service(n, {}, (Endpoint("e", "10.0.0.1", port),)) for n in names))


def worker_pid(renderer: BoundedRenderer) -> int:
    [worker] = renderer._workers
    return worker.pid


def gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie waiting to be reaped counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.fixture
def renderer() -> Any:
    made = BoundedRenderer()
    yield made
    made.close()
    assert _no_children_left()


def test_a_worker_killed_while_idle_is_replaced_and_the_render_is_right(renderer: BoundedRenderer) -> None:
    first = catalog(1, "a", "b")
    assert renderer.render(GOOD, first, target(), DEFAULT_SERVED_HEALTH) == render(GOOD, first, target())
    pid = worker_pid(renderer)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: gone(pid), 10, "the worker to die")
    second = catalog(2, "a", "c")
    assert renderer.render(GOOD, second, target(), DEFAULT_SERVED_HEALTH) == render(GOOD, second, target())
    assert worker_pid(renderer) != pid


@pytest.mark.parametrize("hostile, limits, message", [
    (LOOP, {"render_timeout": 0.5}, "render stopped after render_timeout (0.5s)"),
    (HUGE, {"render_memory": 16 * 1024**2}, "the render needs more than render_memory (16 MiB)"),
], ids=["timeout-killed", "out-of-memory"])
def test_a_hostile_template_ends_its_worker_and_a_good_render_follows(
        renderer: BoundedRenderer, hostile: str, limits: dict[str, Any], message: str) -> None:
    first = catalog(1, "a")
    renderer.render(GOOD, first, target(), DEFAULT_SERVED_HEALTH)
    pid = worker_pid(renderer)
    with pytest.raises(RenderLimit, match=f"^/srv/t.j2: {message}".replace("(", r"\(").replace(")", r"\)")):
        renderer.render(hostile, first, target(**limits), DEFAULT_SERVED_HEALTH)
    assert not renderer._workers and gone(pid)  # killed and reaped
    later = catalog(2, "a", "b")
    assert renderer.render(GOOD, later, target(), DEFAULT_SERVED_HEALTH) == render(GOOD, later, target())


def test_a_template_error_keeps_the_worker(renderer: BoundedRenderer) -> None:
    renderer.render(GOOD, catalog(1, "a"), target(), DEFAULT_SERVED_HEALTH)
    pid = worker_pid(renderer)
    for source in ("{{ nope }}", RECURSE):
        with pytest.raises(TemplateError):
            renderer.render(source, catalog(1, "a"), target(), DEFAULT_SERVED_HEALTH)
    assert renderer.render(GOOD, catalog(2, "b"), target(), DEFAULT_SERVED_HEALTH) == "b: 80r2\n"
    assert worker_pid(renderer) == pid


def test_a_worker_that_crashes_is_one_line_and_the_next_render_forks_another() -> None:
    def crash_on_demand(source: str, *args: Any) -> str:
        if source == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        return source

    renderer = BoundedRenderer(crash_on_demand)
    try:
        assert renderer.render("one", Catalog(1), target(), DEFAULT_SERVED_HEALTH) == "one"
        with pytest.raises(TemplateError, match=r"^/srv/t.j2: the render process killed by SIGSEGV"):
            renderer.render("crash", Catalog(1), target(), DEFAULT_SERVED_HEALTH)
        assert renderer.render("two", Catalog(1), target(), DEFAULT_SERVED_HEALTH) == "two"
    finally:
        renderer.close()
    assert _no_children_left()


@pytest.mark.parametrize("steps", [
    [("a", "b", "c"), ("a", "c"), ("c", "a"), ("b",), (), ("a", "a", "b"), ("a", "b")],
    [("x",), ("w", "x", "y"), ("y", "x", "w")],
], ids=["add-remove-reorder-duplicate", "unsorted"])
def test_a_catalog_fed_as_changes_renders_as_in_process(renderer: BoundedRenderer,
                                                        steps: list[tuple[str, ...]]) -> None:
    """Services added, removed, reordered, a name twice, a changed endpoint: each render byte-identical."""
    for revision, names in enumerate(steps, start=1):
        for port in (80, 81):
            now = catalog(revision, *names, port=port)
            assert renderer.render(GOOD, now, target(), DEFAULT_SERVED_HEALTH) == render(GOOD, now, target())
    served = frozenset({"unhealthy"})  # a new served_health reaches the worker too
    now = catalog(99, "a")
    assert renderer.render(GOOD, now, target(), served) == render(GOOD, now, target(), served) == "a:r99\n"


def test_renders_from_two_threads_each_get_a_worker_and_one_stays(tmp_path: Path) -> None:
    go = tmp_path / "go"

    def wait_for_go(source: str, catalog: Catalog, *args: Any) -> str:
        wait_until(go.exists, 60, "the test's go")
        return f"{source} r{catalog.revision}"

    renderer = BoundedRenderer(wait_for_go)
    results: dict[int, str] = {}

    def run(n: int) -> None:
        results[n] = renderer.render("t", Catalog(n), target(render_timeout=120), DEFAULT_SERVED_HEALTH)

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(renderer._workers) == 2, 30, "a worker per render")
        go.touch()
        for thread in threads:
            thread.join(60)
        assert results == {1: "t r1", 2: "t r2"}
        assert len(renderer._workers) == 1 and len(renderer._idle) == 1
    finally:
        go.touch()
        renderer.close()
    assert _no_children_left()


def test_a_dropped_renderer_leaves_no_worker() -> None:
    renderer = BoundedRenderer()
    renderer.render(GOOD, catalog(1, "a"), target(), DEFAULT_SERVED_HEALTH)
    pid = worker_pid(renderer)
    del renderer
    gc.collect()
    assert gone(pid) and _no_children_left()


class _Unpicklable(str):
    def __reduce__(self) -> Any:
        raise TypeError("not today")


def test_a_job_that_does_not_pickle_is_rendered_by_a_new_fork(renderer: BoundedRenderer) -> None:
    renderer.render(GOOD, catalog(1, "a"), target(), DEFAULT_SERVED_HEALTH)
    pid = worker_pid(renderer)
    source = _Unpicklable("odd {{ revision }}")
    assert renderer.render(source, catalog(2, "a"), target(), DEFAULT_SERVED_HEALTH) == "odd 2"
    assert worker_pid(renderer) != pid and gone(pid)


_GRPC_THEN_RENDER = """
import sys, time
import lbgen.adapters.etcd_connection  # what lbgen's registry adapters import before grpc
import grpc
from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.core.model import DEFAULT_SERVED_HEALTH
from tests.integration.test_render_worker import GOOD, catalog, target
channel = grpc.insecure_channel("127.0.0.1:1")  # gRPC's poller threads running, as in `lbgen watch`
try:
    grpc.channel_ready_future(channel).result(timeout=0.3)
except grpc.FutureTimeoutError:
    pass
failed = 0
for revision in range(1, 21):
    renderer = BoundedRenderer()  # a fresh worker forked each time, asked again once it has idled
    try:
        renderer.render(GOOD, catalog(revision, "a"), target(), DEFAULT_SERVED_HEALTH)
        time.sleep(0.2)
        renderer.render(GOOD, catalog(revision, "a", "b"), target(), DEFAULT_SERVED_HEALTH)
    except Exception as e:
        failed += 1
        print(e, file=sys.stderr)
    renderer.close()
print(failed)
"""


def test_render_workers_forked_beside_grpc_threads_do_not_abort(tmp_path: Path) -> None:
    """gRPC's fork support restarted its poller in the worker on a descriptor the worker closes,
    and the worker aborted (SIGABRT), in about half of the forks; lbgen turns it off before grpc
    loads."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}  # grpcio's default: on
    done = subprocess.run([sys.executable, "-c", _GRPC_THEN_RENDER], env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "0", done.stderr[-2000:]
