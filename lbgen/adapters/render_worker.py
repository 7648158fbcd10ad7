"""The render worker: the long-lived child process in which `BoundedRenderer` renders (issue 13).

Forked once by the renderer (`lbgen.adapters.bounded_render`), it starts from the parent's memory:
the first job's catalog, target and template are inherited, not sent. From then on it keeps what
later renders reuse: the catalog (unchanged services stay the same objects, so the layout memos
and the fragment cache key them by identity), the compiled templates, the fragment cache and the
live-config readers of each target. Each later job is a pickled `Request` carrying only what
changed since its previous one: the services that changed, the target or template if they did.

Only the template's own work runs under the target's limits: before it the worker lowers its soft
RLIMIT_AS and RLIMIT_DATA to its size now plus `render_memory` and its soft RLIMIT_CPU to the CPU
it has used plus `render_timeout` + 1 s (a backstop to the parent's wall clock), and lifts them
after. A template error is an answer and the worker goes on; a MemoryError or a fault of the
worker itself is answered too, then the parent ends it. The parent enforces the wall clock.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

from lbgen.adapters.heap import HeapTrimmer
from lbgen.adapters.kinds import LiveContext, kind_adapter
from lbgen.adapters.render_wire import BROKEN, FAILED, LIMIT, OK, CatalogDelta, RenderFn, Request, answer, read_request
from lbgen.core.kinds import lb_kind
from lbgen.core.layout import ServiceView, layout, service_views
from lbgen.core.model import Catalog, Service
from lbgen.core.render import FragmentCache, compiled, fragment_session, render
from lbgen.core.settings import Target
from lbgen.errors import TemplateError

_PAGE = os.sysconf("SC_PAGE_SIZE")


class Worker:
    """The worker's state between jobs, and how it renders one."""

    def __init__(self, render_fn: RenderFn | None, fragments: bool) -> None:
        self._render_fn = render_fn  # None: `lbgen.core.render.render` with the views and fragments
        self._use_fragments = fragments
        self._targets: dict[str, Target] = {}
        self._sources: dict[str, str] = {}
        self._services: dict[str, Service] = {}
        self._order: tuple[str, ...] = ()
        self._catalog = Catalog(0)
        self._served_health: frozenset[str] = frozenset()
        self._fragments: dict[str, FragmentCache] = {}  # per target
        self._live: dict[str, LiveContext | None] = {}  # per kind

    def handle(self, request: Request) -> tuple[bytes, str]:
        """Take in what the request changes, then render its target: (status, text or error line)."""
        name = request.name
        self._targets[name] = request.target or self._targets[name]
        self._sources[name] = request.source if request.source is not None else self._sources[name]
        self._served_health = request.served_health or self._served_health
        self._take(request.catalog)
        target = self._targets[name]
        try:
            live = self._live_context(target.kind)
            if live is not None and request.rendered is not None:
                live.rendered(target, request.rendered)
            return self._render(target, self._sources[name], live)
        except Exception as e:  # noqa: BLE001  # a fault of lbgen, not of the template: answered, then ended
            return BROKEN, f"{target.template}: the render worker failed: {type(e).__name__}: {e}"[:300]

    def _take(self, catalog: Catalog | CatalogDelta | None) -> None:
        if isinstance(catalog, Catalog):
            self._catalog, self._order = catalog, tuple(s.name for s in catalog.services)
            self._services = {s.name: s for s in catalog.services}
        elif catalog is not None:
            for name in catalog.removed:
                self._services.pop(name, None)
            self._services.update((s.name, s) for s in catalog.changed)
            self._order = self._order if catalog.order is None else catalog.order
            self._catalog = Catalog(catalog.revision, tuple(self._services[n] for n in self._order))

    def _render(self, target: Target, source: str, live: LiveContext | None) -> tuple[bytes, str]:
        catalog, served_health = self._catalog, self._served_health
        if self._render_fn is not None:
            render_fn = self._render_fn
            return attempt(target, lambda: render_fn(source, catalog, target, served_health))
        context = live.context(target, catalog) if live else {}
        try:  # outside the limits, as the compiled template is kept: its cost is the source's, not the render's
            compiled(source, target, fragments=self._use_fragments)
        except TemplateError as e:
            return FAILED, str(e)
        views = _warm(catalog, target, served_health, context, self._use_fragments)
        session = None
        if self._use_fragments:
            session = fragment_session(self._fragments.setdefault(target.name, FragmentCache()))
        status, text = attempt(target, lambda: render(source, catalog, target, served_health, views=views,
                                                      kind_context=context, fragments=session))
        if status == OK:
            if session is not None:
                session.commit()
            if live is not None:
                live.rendered(target, text)
        return status, text

    def _live_context(self, kind: str) -> LiveContext | None:
        if kind not in self._live:
            make = kind_adapter(kind).live_context
            self._live[kind] = make() if make else None
        return self._live[kind]


def _warm(catalog: Catalog, target: Target, served_health: frozenset[str], context: Mapping[str, Any],
          listeners: bool) -> tuple[ServiceView, ...]:
    """The service views, their listeners (`layout()`, which the fragment cache keys by identity)
    and what the target's kind precomputes from them (`LbKind.warm`: HAProxy's server slots),
    outside the render's limits: linear in the catalog whatever the template does, and remembered
    by the layout memos for the next render (at 10,000 services the HAProxy slots alone are about
    30 MiB, bench/render_bench.py)."""
    views = service_views(catalog, served_health)
    if listeners:
        layout(views)
    warm = lb_kind(target.kind).warm
    if warm is not None:
        warm(views, target.vars, {**lb_kind(target.kind).context, **context, "runtime": target.runtime})
    return views


def attempt(target: Target, render_now: Callable[[], str]) -> tuple[bytes, str]:
    """`render_now()` within the target's limits: (OK, text), or a status and one line."""
    name = target.template
    try:
        with limits(target):
            return OK, render_now()
    except TemplateError as e:
        return FAILED, str(e)
    except RecursionError:
        return FAILED, f"{name}: recursion too deep (a macro that calls itself without end?)"
    except MemoryError:
        pass  # leave the except block first: its traceback still holds what filled the memory
    return LIMIT, f"{name}: the render needs more than render_memory ({target.render_memory / 1024**2:g} MiB)"


@contextmanager
def limits(target: Target) -> Iterator[None]:
    """The soft limits of one render: memory now + `render_memory`, CPU used + `render_timeout` + 1 s."""
    with open("/proc/self/statm", "rb") as statm:
        size_pages, _, _, _, _, data_pages = map(int, statm.read().split()[:6])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(usage.ru_utime + usage.ru_stime) + math.ceil(target.render_timeout) + 1
    wanted = ((resource.RLIMIT_AS, size_pages * _PAGE + target.render_memory),
              (resource.RLIMIT_DATA, data_pages * _PAGE + target.render_memory), (resource.RLIMIT_CPU, cpu))
    saved = [(limit, resource.getrlimit(limit)) for limit, _ in wanted]
    try:
        for (limit, value), (_, (_, hard)) in zip(wanted, saved):
            resource.setrlimit(limit, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))
        yield
    finally:
        for limit, previous in saved:
            resource.setrlimit(limit, previous)


def serve(read_fd: int, write_fd: int, worker: Worker, first: Request | None) -> NoReturn:
    """The forked child's whole life: answer `first` (None: read it from the pipe), then each
    request, until the parent closes the pipe (or ends the worker); never returns into the
    parent's code."""
    code = 3
    try:
        _confine(read_fd, write_fd)
        request = first if first is not None else read_request(read_fd)
        trim = HeapTrimmer()
        while request is not None:
            status, text = worker.handle(request)
            answer(write_fd, status, text)
            trim()  # after the answer, off the render's path: what the render freed goes back to the OS
            request = read_request(read_fd) if status in (OK, FAILED) else None
        code = 0
    finally:
        os._exit(code)


def _confine(read_fd: int, write_fd: int) -> None:
    """Signals act by default (SIGTERM ends the worker, SIGXCPU past its CPU limit too), no core
    file, and no descriptor of the parent's stays open but the worker's two pipe ends: another
    worker's pipes must see their own end of file, and a listening socket must close with the
    watcher. The inherited heap is frozen: the collector then walks only the worker's own objects
    (walking the parent's would copy its pages)."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
        signal.signal(signum, signal.SIG_DFL)
    low, high = sorted((read_fd, write_fd))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
    gc.freeze()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
