"""Renders in a forked child with resource limits (issue 10): no template can hang, crash or bloat
the daemon that renders it.

Each render forks. The child inherits the catalog and the compiled template (nothing is pickled),
limits itself (RLIMIT_AS and RLIMIT_DATA at its size at fork + the target's `render_memory`,
RLIMIT_CPU at `render_timeout` + 1 s as a backstop, no core file), renders, and writes the text
back through a pipe. The parent reads it within the wall-clock `render_timeout` and at most
`render_memory` bytes; past either, or on `close()`, it kills the child (SIGKILL) and reaps it.
A loop that never ends, a macro that calls itself, gigabytes of output or a crash of the child
all become one `TemplateError` line naming the template and the limit.
"""

from __future__ import annotations

import fcntl
import functools
import gc
import logging
import math
import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from lbgen.adapters.kinds import LiveContext, kind_adapter
from lbgen.core.kinds import lb_kind
from lbgen.core.layout import ServiceView, service_views
from lbgen.core.model import Catalog
from lbgen.core.fragment_cache import FragmentSession
from lbgen.core.render import FragmentCache, compiled, fragment_session, identity_objects, render
from lbgen.core.settings import Target
from lbgen.errors import RenderLimit, TemplateError

RenderFn = Callable[[str, Catalog, Target, frozenset[str]], str]

_OK, _FAILED, _OUT_OF_MEMORY = b"0", b"1", b"2"
_CHUNK = 1 << 20
_TRAILER = 8  # after the text of a render that succeeded: the length of the fragments sent after it
_PIPE_SIZE = 1 << 20  # fewer wake-ups for a config of megabytes (Linux's default pipe-max-size)
_POLL = 0.25  # seconds between checks of `close()` while the child runs (close also kills it)
_PAGE = os.sysconf("SC_PAGE_SIZE")
log = logging.getLogger(__name__)
_PIPES: set[int] = set()  # every render's pipe ends: a child forked by another thread closes them


@dataclass(frozen=True)
class _Messages:
    """The child's failure lines, formatted before it renders: after a MemoryError there may be no room."""

    recursion: str
    memory: str

    @classmethod
    def of(cls, target: Target) -> _Messages:
        name = target.template
        return cls(recursion=f"{name}: recursion too deep (a macro that calls itself without end?)",
                   memory=f"{name}: the render needs more than render_memory ({_size(target.render_memory)})")


class BoundedRenderer:
    """`lbgen.ports.Renderer`: each render in a child process bounded by the target's limits."""

    def __init__(self, render_fn: RenderFn | None = None, fragments: bool = True) -> None:
        self._render_fn = render_fn  # None: `lbgen.core.render.render`, given the views made before the fork
        self._use_fragments = fragments  # False: render every loop body every time (benchmarks compare)
        self._children: set[int] = set()  # renders in progress (one per thread that renders)
        self._closed = False
        self._live: dict[str, LiveContext | None] = {}  # per kind: its reader of the live config (issue 11)
        self._fragments: dict[str, FragmentCache] = {}  # per target: its loop bodies' texts (issue 13)

    def render(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str]) -> str:
        """The text `render_fn` returns in the child; `TemplateError` for anything else."""
        name = target.template
        if self._closed:
            raise TemplateError(f"{name}: not rendered: lbgen is stopping")
        live = self._live_context(target.kind)
        render_fn, session, objects = self._prepare(source, catalog, target, served_health, live)
        read_fd, write_fd = os.pipe()
        _PIPES.update((read_fd, write_fd))
        _widen_pipe(read_fd)
        pid = os.fork()
        if pid == 0:
            _child(write_fd, target, lambda: render_fn(source, catalog, target, served_health), session)
        _PIPES.discard(write_fd)
        os.close(write_fd)
        self._children.add(pid)
        data, problem = b"", TemplateError(f"{name}: render interrupted")  # type: bytes, TemplateError | None
        try:
            if self._closed:  # close() ran between the check above and the fork
                _kill(pid)
            data, problem = self._collect(read_fd, target)
        finally:
            self._children.discard(pid)
            _PIPES.discard(read_fd)
            os.close(read_fd)
            if problem is not None:  # still running, or about to be: no one else will end it
                _kill(pid)
            status = os.waitpid(pid, 0)[1]
        text, delta = _outcome(target, data, problem, status)
        if session is not None and delta:
            _store(session, delta, objects)
        if live:
            live.rendered(target, text)
        return text

    def _prepare(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str],
                 live: LiveContext | None) -> tuple[RenderFn, FragmentSession | None, dict[int, object]]:
        """What the child renders with: done here, the compiled template, the service views and the
        layout stay cached in this process (the child reuses them instead of redoing them at every
        render; syntax errors are raised here too), and the target's fragment cache (issue 13)."""
        context = live.context(target, catalog) if live else {}
        views = _warm(catalog, target, served_health, context)
        if self._render_fn is not None:
            compiled(source, target)
            return self._render_fn, None, {}
        if not self._use_fragments:
            compiled(source, target)
            return functools.partial(render, views=views, kind_context=context), None, {}
        compiled(source, target, fragments=True)
        session = fragment_session(self._fragments.setdefault(target.name, FragmentCache()))
        render_fn = functools.partial(render, views=views, kind_context=context, fragments=session)
        return render_fn, session, identity_objects(views)

    def _live_context(self, kind: str) -> LiveContext | None:
        """This renderer's reader of the live config for `kind` (None: the kind reads none)."""
        if kind not in self._live:
            make = kind_adapter(kind).live_context
            self._live[kind] = make() if make else None
        return self._live[kind]

    def close(self) -> None:
        """Kill the render in progress (it raises `TemplateError`) and refuse later ones."""
        self._closed = True
        for pid in list(self._children):
            _kill(pid)

    def _collect(self, fd: int, target: Target) -> tuple[bytes, TemplateError | None]:
        """What the child wrote until it closed the pipe; or a reason why reading stopped before."""
        deadline = time.monotonic() + target.render_timeout
        chunks: list[bytes] = []
        size = 0
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if self._closed:  # close() kills the child: its end of the pipe closes too
                return b"", TemplateError(f"{target.template}: render interrupted: lbgen is stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                return b"", RenderLimit(f"{target.template}: render stopped after render_timeout "
                                        f"({target.render_timeout:g}s): a loop that never ends?")
            if not poller.poll(min(left, _POLL) * 1000):
                continue
            chunk = os.read(fd, _CHUNK)
            if not chunk and not self._closed:
                return b"".join(chunks), None
            size += len(chunk)
            if size > target.render_memory + 1 + _TRAILER:  # the text alone is at most render_memory
                return b"", RenderLimit(f"{target.template}: output larger than render_memory "
                                        f"({_size(target.render_memory)})")
            chunks.append(chunk)


def _warm(catalog: Catalog, target: Target, served_health: frozenset[str],
          context: Mapping[str, Any]) -> tuple[ServiceView, ...]:
    """Compute here what the layout helpers remember between renders (`lbgen.core.layout` memos):
    the service views (handed to the child as they are: walking the memo there would copy its
    pages), and what the target's kind precomputes from them (`LbKind.warm`: HAProxy's server
    slots, nginx's endpoint block with `runtime` on). Linear in the catalog, whatever the template
    does; at 10,000 services this saves the child about 0.1 s and, for HAProxy, 30 MiB per render
    (bench/render_bench.py)."""
    views = service_views(catalog, served_health)
    warm = lb_kind(target.kind).warm
    if warm is not None:
        warm(views, target.vars, {**lb_kind(target.kind).context, **context, "runtime": target.runtime})
    return views


def _store(session: FragmentSession, delta: bytes, objects: dict[int, object]) -> None:
    """Keep the fragments the child rendered; a delta that does not read back is dropped (the
    cache only misses then, it never serves wrong text)."""
    try:
        session.commit_delta(pickle.loads(delta), objects)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError):
        log.warning("fragment cache: the render's fragments did not read back; not kept")


def _outcome(target: Target, data: bytes, problem: TemplateError | None, status: int) -> tuple[str, bytes]:
    """The rendered text and the fragments the child rendered (pickled, maybe empty), or the one
    line that says why there is none (`RenderLimit` for a limit)."""
    if problem is not None:
        raise problem
    if data[:1] == _OK and os.waitstatus_to_exitcode(status) == 0 and len(data) >= 1 + _TRAILER:
        extra = int.from_bytes(data[-_TRAILER:], "big")
        end = len(data) - _TRAILER - extra
        return data[1:end].decode("utf-8", "surrogatepass"), data[end:-_TRAILER]
    if data[:1] in (_FAILED, _OUT_OF_MEMORY):
        kind = RenderLimit if data[:1] == _OUT_OF_MEMORY else TemplateError
        raise kind(data[1:].decode("utf-8", "replace"))
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGXCPU:
        raise RenderLimit(f"{target.template}: the render used more CPU than render_timeout "
                          f"({target.render_timeout:g}s)")
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
    raise TemplateError(f"{target.template}: the render process {how} (render_memory "
                        f"{_size(target.render_memory)}, render_timeout {target.render_timeout:g}s)")


def _child(write_fd: int, target: Target, render_now: Callable[[], str],
           session: FragmentSession | None) -> NoReturn:
    """In the forked child: limit, render, send, and leave without running any of the parent's cleanup."""
    code = 3
    try:
        _confine(write_fd, target)
        messages = _Messages.of(target)
        status, text = _attempt(render_now, messages)
        _send(write_fd, status, text)
        if status == _OK:
            extra = _fragments(session, text, target.render_memory)
            _write_all(write_fd, extra + len(extra).to_bytes(_TRAILER, "big"))
        code = 0
    finally:
        os._exit(code)


def _fragments(session: FragmentSession | None, text: str, budget: int) -> bytes:
    """The fragments this render rendered, for the parent's cache; none if the text and they
    would pass `render_memory` together (the parent reads no more), or there is no room left."""
    if session is None:
        return b""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    try:
        data = pickle.dumps(session.delta(), protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        return b""
    return data if size + len(data) <= budget else b""


def _confine(write_fd: int, target: Target) -> None:
    """Signals act by default, the limits apply from here on, and of the render pipes only this
    one's write end stays open: a render in another thread must see its own child's end of file.
    (Other descriptors stay: gRPC, when its fork support is on, aborts a child that closes its own.)"""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    for fd in _PIPES - {write_fd}:
        os.close(fd)
    gc.disable()  # a full collection would walk (and copy) the whole inherited heap
    with open("/proc/self/statm", "rb") as statm:
        size_pages, _, _, _, _, data_pages = map(int, statm.read().split()[:6])
    budget = target.render_memory
    for limit, used in ((resource.RLIMIT_AS, size_pages), (resource.RLIMIT_DATA, data_pages)):
        resource.setrlimit(limit, (used * _PAGE + budget,) * 2)
    cpu = math.ceil(target.render_timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _attempt(render_now: Callable[[], str], messages: _Messages) -> tuple[bytes, str]:
    try:
        return _OK, render_now()
    except TemplateError as e:
        return _FAILED, str(e)
    except RecursionError:
        return _FAILED, messages.recursion
    except MemoryError:
        pass  # leave the except block first: its traceback still holds what filled the memory
    return _OUT_OF_MEMORY, messages.memory


def _send(fd: int, status: bytes, text: str) -> None:
    _write_all(fd, status)
    for start in range(0, len(text), _CHUNK):
        _write_all(fd, text[start:start + _CHUNK].encode("utf-8", "surrogatepass"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _widen_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # a smaller pipe only means more wake-ups


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _size(size: int) -> str:
    return f"{size / 1024**2:g} MiB"
