"""Renders in a long-lived child process with resource limits (issues 10 and 13): no template can
hang, crash or bloat the daemon that renders it, and a render costs no fork.

The renderer forks a worker (`lbgen.adapters.render_worker`) at its first render: the child
inherits that render's catalog, target and template, and keeps them, the compiled templates and
the fragment cache for the next renders, which send it only what changed (the services that are
not the same objects as in its previous render; `lbgen.adapters.render_wire`). Only the child
imports Jinja and the renderer, right after the fork (~20 ms): they stay out of the watcher
process (~2.4 MB of its resident size, issue 13). A one-shot command forks its worker ahead
instead (`fork_ahead`), so that import overlaps its registry read. The worker limits each render's memory to its
size at the render plus `render_memory` and its CPU to `render_timeout` + 1 s; the parent waits at
most `render_timeout` for the answer and reads at most `render_memory` bytes. Past either, when the
worker dies (a crash, a limit) or on `close()`, the parent kills it (SIGKILL) and reaps it; the
next render forks a new one. A loop that never ends, a macro that calls itself, gigabytes of
output or a crash all become one `TemplateError` line naming the template and the limit.

Renders from several threads at once (a lane's quarantine probes beside the watcher's pass) each
take an idle worker or fork one; at most one idle worker is kept.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import select
import signal
import threading
import time
import weakref
from collections.abc import Iterable
from typing import NoReturn

from lbgen.adapters.kinds import kind_adapter
from lbgen.adapters.template_file import TemplateFile
from lbgen.adapters.render_wire import (
    FAILED, HEADER, LIMIT, OK, CatalogDelta, RenderFn, Request, encode_request, write_all,
)
from lbgen.core.model import Catalog, Service
from lbgen.core.settings import Target
from lbgen.errors import RenderLimit, TemplateError

_CHUNK = 1 << 20
AHEAD_MAX_ENDPOINTS = 5_000  # a worker forked ahead takes a catalog this big pickled (`fork_ahead`)
_POLL = 0.25  # seconds between checks of `close()` while the worker renders (close also kills it)
log = logging.getLogger(__name__)


class _Handle:
    """The parent's side of one worker: its pipes, and what it holds (so a request sends only the rest)."""

    def __init__(self, pid: int, send_fd: int, receive_fd: int) -> None:
        self.pid, self.send_fd, self.receive_fd = pid, send_fd, receive_fd
        self.catalog: Catalog | None = None
        self.services: dict[str, Service] = {}
        self.names: list[str] = []
        self.served_health: frozenset[str] | None = None
        self.targets: dict[str, Target] = {}
        self.sources: dict[str, str] = {}
        self.seen: dict[str, int] = {}  # target → the serial of its last text this worker knows
        self.ended = False

    def request(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str],
                last: tuple[int, str] | None) -> Request:
        """What the worker needs beyond what it holds to render this; recorded as sent."""
        name = target.name
        changed_target = None if self.targets.get(name) == target else target
        old = self.sources.get(name)
        changed_source = None if old is source or (old == source and _origin(old) == _origin(source)) else source
        rendered = None
        if last is not None and self.seen.get(name) != last[0]:
            rendered = last[1]
        message = self._catalog_message(catalog)
        request = Request(name, changed_target, changed_source,
                          None if served_health == self.served_health else served_health, message, rendered)
        self.record(source, target, served_health, last)
        return request

    def record(self, source: str, target: Target, served_health: frozenset[str],
               last: tuple[int, str] | None) -> None:
        self.targets[target.name], self.sources[target.name], self.served_health = target, source, served_health
        if last is not None:
            self.seen[target.name] = last[0]

    def _catalog_message(self, catalog: Catalog) -> Catalog | CatalogDelta | None:
        """Nothing for the catalog the worker has; else the services that are not the same objects
        as the worker's, the names gone, and the order when it changed (a catalog with a name twice
        is sent whole)."""
        if catalog is self.catalog:
            return None
        known, names = self.services, [s.name for s in catalog.services]
        changed = tuple(s for s in catalog.services if known.get(s.name) is not s)
        self.catalog = catalog
        if len(set(names)) != len(names):
            self.services, self.names = {s.name: s for s in catalog.services}, names
            return catalog
        removed: tuple[str, ...] = ()
        if len(known) + sum(s.name not in known for s in changed) != len(names):
            present = set(names)
            removed = tuple(name for name in known if name not in present)
        for name in removed:
            del known[name]
        known.update((s.name, s) for s in changed)
        order = None if names == self.names else tuple(names)
        self.names = names
        return CatalogDelta(catalog.revision, changed, removed, order)

    def forked(self, catalog: Catalog) -> None:
        """The worker was forked with `catalog`: it holds it, inherited."""
        self.catalog, self.names = catalog, [s.name for s in catalog.services]
        self.services = {s.name: s for s in catalog.services}

    def kill(self) -> None:
        """SIGKILL, unless the worker was reaped already (its pid may be another process's now)."""
        if self.ended:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def end(self) -> int:
        """Kill and reap the worker, close the pipes; its wait status (0 if ended before)."""
        if self.ended:
            return 0
        self.kill()
        self.ended = True
        os.close(self.send_fd)
        os.close(self.receive_fd)
        try:
            return os.waitpid(self.pid, 0)[1]
        except ChildProcessError:
            return 0


def _origin(source: str) -> object:
    """Where `source`'s includes resolve: a template file's directory (its loader is made in the
    worker), or the loader a source carries."""
    if isinstance(source, TemplateFile):
        return source.directory
    return getattr(source, "loader", None)


def _serve_in_child(read_fd: int, write_fd: int, render_fn: RenderFn | None, fragments: bool,
                    first: Request | None) -> NoReturn:
    """The forked child: import the renderer (the watcher process never does, `render_worker`) and
    serve. Imported here, in the child's only thread: no lock of another thread's import can be
    held, as the watcher's threads never import these modules."""
    from lbgen.adapters.render_worker import Worker, serve

    serve(read_fd, write_fd, Worker(render_fn, fragments), first)


class BoundedRenderer:
    """`lbgen.ports.Renderer`: each render in a worker process bounded by the target's limits."""

    def __init__(self, render_fn: RenderFn | None = None, fragments: bool = True) -> None:
        self._render_fn = render_fn  # None: `lbgen.core.render.render`, with the worker's views
        self._use_fragments = fragments  # False: render every loop body every time (benchmarks compare)
        self._lock = threading.Lock()
        self._idle: list[_Handle] = []
        self._workers: set[_Handle] = set()  # alive, idle or rendering: `close()` kills them all
        self._closed = False
        self._last: dict[str, tuple[int, str]] = {}  # target → its last text (for its kind's live-config reader)
        self._serial = itertools.count(1)
        weakref.finalize(self, _end_all, self._workers)

    def render(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str]) -> str:
        """The text the template renders in a worker; `TemplateError` for anything else."""
        if self._closed:
            raise TemplateError(f"{target.template}: not rendered: lbgen is stopping")
        last = self._last.get(target.name)
        worker = self._send(source, catalog, target, served_health, last)
        try:
            status, payload = self._collect(worker.receive_fd, target)
        except BaseException:
            self._end(worker)
            raise
        if status is None:
            raise self._died(target, self._end(worker))
        text = payload.decode("utf-8", "surrogatepass")
        if status == OK:
            self._remember(worker, target, text)
        if status in (OK, FAILED):
            self._give_back(worker)
        else:
            self._end(worker)
        if status != OK:
            raise (RenderLimit if status == LIMIT else TemplateError)(text)
        return text

    def _remember(self, worker: _Handle, target: Target, text: str) -> None:
        """The target's last text, for a worker whose live-config reader did not see it render."""
        if kind_adapter(target.kind).live_context is not None:
            serial = next(self._serial)
            self._last[target.name] = (serial, text)
            worker.seen[target.name] = serial

    def close(self) -> None:
        """Kill every worker (a render in progress raises `TemplateError`) and refuse later renders.
        Safe in a signal handler: it takes no lock unless free, and the threads that render reap
        their own workers."""
        self._closed = True
        for worker in list(self._workers):
            worker.kill()
        if self._lock.acquire(blocking=False):
            try:
                idle, self._idle = self._idle, []
            finally:
                self._lock.release()
            for worker in idle:
                self._end(worker)

    def _send(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str],
              last: tuple[int, str] | None) -> _Handle:
        """An idle worker told the job, or a new one forked with it."""
        while (worker := self._checkout()) is not None:
            if worker.catalog is None and catalog.endpoint_count > AHEAD_MAX_ENDPOINTS:
                self._end(worker)  # forked ahead: this catalog is cheaper inherited than pickled
                break
            try:
                data = encode_request(worker.request(source, catalog, target, served_health, last))
            except (pickle.PicklingError, TypeError, AttributeError) as e:  # a new forked worker inherits it
                log.warning("%s: the render job does not pickle (%s); forking a new render worker", target.name, e)
                self._end(worker)
                break
            try:
                write_all(worker.send_fd, data)
                return worker
            except OSError as e:  # it died while idle (killed by hand, or by the OOM killer)
                log.warning("render worker %s gone (%s); forking another", worker.pid, e)
                self._end(worker)
        return self._fork(source, catalog, target, served_health, last)

    def fork_ahead(self) -> None:
        """Fork an idle worker now, holding nothing: it imports Jinja and the renderer on another
        core while the caller reads the registry (`lbgen render`, issue 13: ~20 ms of 150). Its
        first job carries the catalog pickled, so a catalog of more than `AHEAD_MAX_ENDPOINTS`
        endpoints goes to a worker forked with it instead (render_worker_bench: a catalog pickled
        and read back costs ~3 us per endpoint, the import it saves ~20 ms)."""
        worker = self._spawn(None)
        if worker is not None:
            self._give_back(worker)

    def _fork(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str],
              last: tuple[int, str] | None) -> _Handle:
        first = Request(target.name, target, source, served_health, catalog, last[1] if last else None)
        worker = self._spawn(first)
        if worker is None:  # close() killed the idle worker this render was told to
            raise TemplateError(f"{target.template}: render interrupted: lbgen is stopping")
        worker.forked(catalog)
        worker.record(source, target, served_health, last)
        return worker

    def _spawn(self, first: Request | None) -> _Handle | None:
        """A worker forked with `first` as its first job (None: it waits for one); None when closed."""
        if self._closed:
            return None
        to_child, from_child = os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:
            _serve_in_child(to_child[0], from_child[1], self._render_fn, self._use_fragments, first)
        os.close(to_child[0])
        os.close(from_child[1])
        worker = _Handle(pid, to_child[1], from_child[0])
        self._workers.add(worker)
        if self._closed:  # close() ran before this worker was in `_workers`
            worker.kill()
        return worker

    def _checkout(self) -> _Handle | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, worker: _Handle) -> None:
        """Keep the worker for the next render, unless one is idle already or the renderer is closed."""
        with self._lock:
            if not self._idle and not self._closed:
                self._idle.append(worker)
                return
        self._end(worker)

    def _end(self, worker: _Handle) -> int:
        self._workers.discard(worker)
        return worker.end()

    def _collect(self, fd: int, target: Target) -> tuple[bytes | None, bytes]:
        """The worker's answer: its status and payload; (None, b"") if it ended before answering."""
        deadline = time.monotonic() + target.render_timeout
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        buffer, need = bytearray(), HEADER
        while len(buffer) < need:
            chunk = self._read(fd, poller, deadline, target)
            if not chunk:
                if self._closed:
                    raise TemplateError(f"{target.template}: render interrupted: lbgen is stopping")
                return None, b""
            buffer += chunk
            if need == HEADER and len(buffer) >= HEADER:
                need += int.from_bytes(buffer[1:HEADER], "big")
                if need - HEADER > target.render_memory:  # the text alone is at most render_memory
                    raise RenderLimit(f"{target.template}: output larger than render_memory "
                                      f"({_size(target.render_memory)})")
        return bytes(buffer[:1]), bytes(buffer[HEADER:need])

    def _read(self, fd: int, poller: select.poll, deadline: float, target: Target) -> bytes:
        """The next bytes of the answer (b"" at the end), or why reading stopped before."""
        while True:
            if self._closed:  # close() kills the worker: its end of the pipe closes too
                raise TemplateError(f"{target.template}: render interrupted: lbgen is stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RenderLimit(f"{target.template}: render stopped after render_timeout "
                                  f"({target.render_timeout:g}s): a loop that never ends?")
            if poller.poll(min(left, _POLL) * 1000):
                return os.read(fd, _CHUNK)

    @staticmethod
    def _died(target: Target, status: int) -> TemplateError:
        """Why the worker ended without answering, in one line."""
        code = os.waitstatus_to_exitcode(status)
        if code == -signal.SIGXCPU:
            return RenderLimit(f"{target.template}: the render used more CPU than render_timeout "
                               f"({target.render_timeout:g}s)")
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        return TemplateError(f"{target.template}: the render process {how} (render_memory "
                             f"{_size(target.render_memory)}, render_timeout {target.render_timeout:g}s)")


def _end_all(workers: Iterable[_Handle]) -> None:
    """A renderer dropped or the interpreter exiting: no worker outlives it."""
    for worker in list(workers):
        worker.end()


def _size(size: int) -> str:
    return f"{size / 1024**2:g} MiB"
