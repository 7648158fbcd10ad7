"""Rendering: template source + catalog + target → config text. Pure: no file reads, no clock.

The Jinja environment is sandboxed and immutable (a template cannot call arbitrary methods or
mutate the catalog), undefined names are errors (`StrictUndefined`), and autoescape is off (these
are config files, not HTML). Registry values are validated by `schema` before they get here;
as a second line of defence, for the targets of a guarded kind (`lbgen.core.kinds`: nginx, HAProxy)
every `{{ ... }}` output must be either a plain token that cannot open, end or comment out a
directive, or the output of a quoting filter (each kind brings its own). Every kind's filters and
globals are registered in the one environment. Templates are compiled once per source text and reused.

Loop bodies are rendered through the fragment cache (`lbgen.core.fragments`, issue 13) when the
caller passes a `FragmentSession`: the text stays byte-identical, only the unchanged parts are reused.

`{% include %}` and `{% import %}` resolve through the `loader` a source carries: a template read
from its file (`lbgen.adapters.template_file`) has the loader of its directory (no `..`, no
absolute names), a `TemplateSource` the one it was given. A plain `str` source has no loader: an
include is then a `TemplateError`, never a crash. A source may also carry a Jinja bytecode cache
(`code_cache`; a file's is this user's private one): compiling nginx.conf.j2 costs ~18 ms, a
one-shot `lbgen render` pays it at every start without one (issue 13).
"""

from __future__ import annotations

import functools
from types import CodeType, TracebackType
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lbgen import __version__
from lbgen.core import fragments as frag
from lbgen.core import layout as lay
from lbgen.core.fragment_cache import FragmentCache, FragmentSession
from lbgen.core.kinds import all_kinds, lb_kind
from lbgen.core.layout import UnsafeValue, Verbatim, host_port, layout, service_views
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint
from lbgen.core.quoting import BARE_RE, CONTROL_RE
from lbgen.core.settings import Target
from lbgen.errors import TemplateError

__all__ = ["BARE_RE", "FragmentCache", "InProcessRenderer", "TemplateSource", "UnsafeValue", "compile_template",
           "compiled", "fragment_session", "render"]


class TemplateSource(str):
    """A template's text, the loader its includes resolve through (None: includes refused) and the
    cache of its compiled code (None: compiled from the text).

    A `str`, so code that stores or compares sources needs no change; the loader travels with it."""

    loader: jinja2.BaseLoader | None
    code_cache: jinja2.BytecodeCache | None

    def __new__(cls, text: str, loader: jinja2.BaseLoader | None = None,
                code_cache: jinja2.BytecodeCache | None = None) -> TemplateSource:
        source = super().__new__(cls, text)
        source.loader = loader
        source.code_cache = code_cache
        return source

    def __reduce__(self) -> tuple[type[TemplateSource], tuple[str, jinja2.BaseLoader | None,
                                                              jinja2.BytecodeCache | None]]:
        return TemplateSource, (str(self), self.loader, self.code_cache)


def hostport(endpoint: Endpoint) -> Verbatim:
    """`address:port`, with IPv6 addresses in brackets (both nginx and HAProxy accept that form)."""
    return host_port(endpoint.address, endpoint.port)


_QUOTING_FILTERS = ", ".join(sorted(name for kind in all_kinds() if kind.guarded for name in kind.filters))


def _guard_output(value: Any) -> Any:
    """Jinja `finalize` for guarded kinds: let only quoted or plainly safe values through."""
    kind = type(value)
    if kind is int or kind is float or kind is frag.FragmentText:  # a fragment was guarded as it rendered
        return value
    if kind is Verbatim:
        if CONTROL_RE.search(value):  # no output may end its line, whoever built it
            raise UnsafeValue(f"refusing output with a control character: {value!r:.100}")
        return value
    if isinstance(value, str) and BARE_RE.fullmatch(value):
        return value
    if isinstance(value, jinja2.Undefined):
        return value  # printing it raises the precise UndefinedError or SecurityError
    raise UnsafeValue(
        f"unquoted output {value!r}: pass values through a quoting filter ({_QUOTING_FILTERS})"
    )


# lbgen's own frozen value types: their public fields are plain data, safe to read without the
# sandbox's generic checks, which cost about 10 us per read (3 s at 100,000 endpoints).
_VALUE_TYPES = (Endpoint, lay.ServiceView, lay.Route, lay.VirtualHost, lay.Listener, lay.Layout,
                *(cls for kind in all_kinds() for cls in kind.value_types))


def _fields(cls: type) -> tuple[str, ...]:
    """The field names of a msgspec Struct or a NamedTuple."""
    return tuple(getattr(cls, "__struct_fields__", None) or getattr(cls, "_fields"))


def _public_fields(cls: type) -> frozenset[str]:
    """A frozen msgspec Struct's fields and properties, or a NamedTuple's fields."""
    if not hasattr(cls, "__struct_fields__"):
        return frozenset(getattr(cls, "_fields"))
    return frozenset(_fields(cls)) | {name for name, member in vars(cls).items() if isinstance(member, property)}


_PUBLIC_FIELDS = {cls: _public_fields(cls) for cls in _VALUE_TYPES}


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a fast path for reading fields of lbgen's value types."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        fields = _PUBLIC_FIELDS.get(type(obj))
        if fields is not None and attribute in fields:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


def _environment(guarded: bool) -> ImmutableSandboxedEnvironment:
    env = _Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_guard_output if guarded else None,
        auto_reload=False,
    )
    env.filters.update(hostport=hostport)
    env.globals.update(layout=layout)
    for kind in all_kinds():
        env.filters.update(kind.filters)
        env.globals.update({name: jinja2.pass_context(g) if name in kind.fragment_context else g
                            for name, g in kind.template_globals.items()})
    return env


_ENVIRONMENTS = {True: _environment(True), False: _environment(False)}


def _fragment_rules() -> frag.Rules:
    """What fragment keys may hold: the pure globals, the declared context reads, the value types."""
    globals_ = _ENVIRONMENTS[True].globals
    reads = {id(kind.template_globals[name]): read for kind in all_kinds()
             for name, read in kind.fragment_context.items()}
    pure = {id(g): name for name, g in globals_.items()
            if name not in ("lipsum",) and id(g) not in reads and not getattr(g, "jinja_pass_arg", None)}
    fields = {cls: tuple(_fields(cls)) for cls in _VALUE_TYPES if cls not in _IDENTITY_TYPES}
    return frag.Rules(globals=pure, context_reads=reads, value_types=fields,
                      identity_types=_IDENTITY_TYPES, text_types=frozenset({Verbatim}))


# Keyed by identity: immutable, and handed out again while unchanged (the view memo, and the
# layout's tables per port and host), so an unchanged service, server or port is one cheap key part.
_IDENTITY_TYPES = frozenset({lay.ServiceView, lay.VirtualHost, lay.Listener})


_RULES = _fragment_rules()


def fragment_session(cache: FragmentCache) -> FragmentSession:
    """A render's session of `cache` (one per target; `commit()` it after a successful render)."""
    return cache.session(_RULES)


class _NoLoader(jinja2.BaseLoader):
    """What a source without a loader includes through: a clear error instead of Jinja's TypeError."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, None]:
        raise jinja2.TemplateNotFound(f"{template} (this template was not read from a file: no includes)")


@functools.lru_cache(maxsize=64)
def _environment_with(guarded: bool, loader: jinja2.BaseLoader | None) -> ImmutableSandboxedEnvironment:
    """The shared sandbox with `loader` for includes; `auto_reload` so an edited include is seen
    at the next render (the loader stats it, the core opens nothing)."""
    return _ENVIRONMENTS[guarded].overlay(loader=loader or _NoLoader(), auto_reload=loader is not None)


@functools.lru_cache(maxsize=64)
def compile_template(source: str, name: str, guarded: bool, loader: jinja2.BaseLoader | None = None,
                     fragments: bool = False, code_cache: jinja2.BytecodeCache | None = None) -> jinja2.Template:
    """The compiled template for `source` (cached: the watcher renders the same source many times).
    `fragments`: with its qualifying loop bodies rewritten as cached fragments (issue 13).
    `code_cache`: where the code of the template as written is kept between processes."""
    env = _environment_with(guarded, loader)
    if fragments:
        compile_template(source, name, guarded, loader, code_cache=code_cache)  # its errors, as written
        ast = env.parse(source, name=name, filename=name)
        calls = frag.rewrite(env, ast, name)
        code = env.compile(ast, name=name, filename=name)
        return env.template_class.from_code(env, code, env.make_globals(calls))
    try:
        code = _code(env, source, name, guarded, code_cache)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{name}:{e.lineno}: {e.message}") from e
    return env.template_class.from_code(env, code, env.make_globals(None))


def _code(env: jinja2.Environment, source: str, name: str, guarded: bool,
          code_cache: jinja2.BytecodeCache | None) -> CodeType:
    """`source` compiled, or its code from `code_cache`. The cache checks the source's checksum and
    the Python version; the key adds what else shapes the code: the template's name (its frames'
    file name), the environment (guarded: with `finalize`), and the lbgen and Jinja versions."""
    if code_cache is None:
        return env.compile(source, name=name, filename=name)
    bucket = code_cache.get_bucket(env, name, f"{guarded}|lbgen {__version__}|jinja2 {jinja2.__version__}", source)
    if bucket.code is None:
        bucket.code = env.compile(source, name=name, filename=name)
        code_cache.set_bucket(bucket)
    return bucket.code


def compiled(source: str, target: Target, name: str | None = None, fragments: bool = False) -> jinja2.Template:
    """The compiled template `render` uses for `source` (a `TemplateSource` brings its loader and
    its code cache)."""
    return compile_template(str(source), name or target.template, lb_kind(target.kind).guarded,
                            getattr(source, "loader", None), fragments, getattr(source, "code_cache", None))


def render(
    source: str,
    catalog: Catalog,
    target: Target,
    served_health: frozenset[str] = DEFAULT_SERVED_HEALTH,
    name: str | None = None,
    views: tuple[lay.ServiceView, ...] | None = None,
    kind_context: Mapping[str, Any] | None = None,
    fragments: FragmentSession | None = None,
) -> str:
    """Render `source` for `target` with the documented context (docs/templates.md).

    Context: `services` (sorted by name, each with `name`, `spec`, `endpoints` = the served ones,
    `all_endpoints`), `vars` (the target's vars), `revision` and `runtime` (the target's setting:
    whether changes may go through the LB's runtime API). Raises `TemplateError` naming the
    template and line for syntax errors, undefined names, sandbox violations and unsafe values.
    `views`: `service_views(catalog, served_health)` when the caller has them already (the render
    worker computes them, and the kind's warm-up, before it limits the render).
    `kind_context`: the extra context the target's kind reads, over the kind's defaults (HAProxy's
    `previous_slots`: where the live config has each endpoint, so that `slots()` keeps it there),
    read from the live config by the kind's adapter (`lbgen.adapters.kinds`).
    `fragments`: the target's fragment cache session (`fragment_session`): loop bodies whose
    inputs are unchanged since the cache's last render are reused, not rendered (issue 13).
    """
    name = name or target.template
    template = compiled(source, target, name, fragments is not None)
    context = {
        **lb_kind(target.kind).context,
        **(kind_context or {}),
        "services": service_views(catalog, served_health) if views is None else views,
        "vars": target.vars,
        "revision": catalog.revision,
        "runtime": target.runtime,
        frag.SESSION: fragments,
    }
    try:
        return template.render(context)
    except (jinja2.TemplateError, SecurityError, UnsafeValue, TypeError, ValueError, ArithmeticError,
            LookupError, AttributeError) as e:
        line = _template_line(e.__traceback__, name)
        where = f"{name}:{line}" if line else name
        raise TemplateError(f"{where}: {type(e).__name__}: {e}") from e


class InProcessRenderer:
    """`lbgen.ports.Renderer` in the calling process, unbounded: for tests and benchmarks.

    `lbgen watch` and `lbgen render` use `lbgen.adapters.bounded_render.BoundedRenderer`, which
    also reads the kind's context from the live config (issue 11); this one reads nothing.
    Keeps a fragment cache per target (issue 13).
    """

    def __init__(self) -> None:
        self._caches: dict[str, FragmentCache] = {}

    def render(self, source: str, catalog: Catalog, target: Target, served_health: frozenset[str]) -> str:
        session = fragment_session(self._caches.setdefault(target.name, FragmentCache()))
        text = render(source, catalog, target, served_health, fragments=session)
        session.commit()
        return text

    def close(self) -> None:
        """Nothing to interrupt: a render in this process runs to its end."""


def _template_line(tb: TracebackType | None, name: str) -> int | None:
    """The innermost line of `name` in a traceback (Jinja maps template frames back to it)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
