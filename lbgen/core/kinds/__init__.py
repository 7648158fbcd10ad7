"""The registry of LB kinds: one module (or package) per kind holds its pure rules (issue 11).

`lbgen.core.kinds.<name>` defines `KIND`, an `LbKind`: its built-in check, whether template
outputs must be quoted, its template filters and globals, its runtime-API rules and what the
bounded renderer precomputes for it. Settings, rendering and the applier ask this registry and
name no kind themselves, so adding a kind is a new module here, one in `lbgen.adapters.kinds`,
a template and their tests (docs/architecture.md, "A new LB kind").

Kinds are found by listing this package's `__path__` (cheap: nothing is imported) and loaded on
first use with importlib.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import posixpath
from collections.abc import Callable, Hashable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from lbgen.errors import ConfigError

if TYPE_CHECKING:
    from lbgen.core.layout import ServiceView

GENERIC = "generic"
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class RuntimeChange(Protocol):
    """A kind's plan for bringing a running LB to a new config without a reload. Opaque to the
    applier, which hands it to the kind's `RuntimeApi` and logs its length (commands to send).
    `needs_check`: False when the change cannot make the file invalid (nginx: only lbgen's own
    encoding of endpoint sets changed, issue 12): the applier then writes it without the checker."""

    @property
    def needs_check(self) -> bool: ...

    def __len__(self) -> int: ...


class ContextRead(msgspec.Struct, frozen=True):
    """What a template global that reads the render context reads, so the fragment cache can key
    it (`lbgen.core.fragments`): the context `names` it reads, and `key(context, value)`: a hashable
    value standing for what it reads there about one identity-keyed value of a fragment's key
    (equal keys: equal reads). It must raise for a value it cannot vouch for (a listener, or a
    tuple of hosts, holds services it does not see): the loop body then renders uncached."""

    names: tuple[str, ...]
    key: Callable[[Mapping[str, Any], "ServiceView"], Hashable]


Warm = Callable[["Sequence[ServiceView]", Mapping[str, Any], Mapping[str, Any]], None]


class LbKind(msgspec.Struct, frozen=True):
    """The pure rules of one kind of load balancer.

    `check`: the built-in checker's argv with `{staged}` (() for none: the target must set one).
    `guarded`: every template output must be quoted by a filter or be a bare safe token.
    `filters`, `template_globals`: registered into the one Jinja environment (every kind's are
    available to every template). `context`: defaults of the extra render context the kind's
    globals read (the live reader of `lbgen.adapters.kinds` overrides them per render).
    `value_types`: frozen value types whose fields templates read (the sandbox's fast path).
    `runtime_default`: None when the kind has no runtime API; else whether `runtime` defaults on,
    from the target's vars. `plan_runtime(old, new)`: the runtime change between two rendered
    texts, or None when only a reload can apply it. `warm(views, vars, context)` (`context`: the
    kind's render context and `runtime`): what the render worker precomputes before it limits the
    template's render (and keeps for the next one).
    `fragment_context`: per template global that reads the render context, what it reads
    (`ContextRead`); the renderer passes such a global the context as its first argument (kinds
    know no Jinja: the watcher process imports them, and only its render worker imports Jinja).
    A loop body calling an undeclared global that reads the context is never cached.
    """

    name: str
    check: tuple[str, ...] = ()
    guarded: bool = False
    filters: Mapping[str, Callable[..., Any]] = _EMPTY
    template_globals: Mapping[str, Any] = _EMPTY
    context: Mapping[str, Any] = _EMPTY
    value_types: tuple[type, ...] = ()
    runtime_default: Callable[[Mapping[str, Any]], bool] | None = None
    plan_runtime: Callable[[str, str], RuntimeChange | None] | None = None
    warm: Warm | None = None
    fragment_context: Mapping[str, ContextRead] = _EMPTY


def kind_names() -> tuple[str, ...]:
    """Every kind this package (and any directory added to its `__path__`) holds, sorted."""
    return _names(tuple(__path__))


@functools.lru_cache(maxsize=8)
def _names(path: tuple[str, ...]) -> tuple[str, ...]:
    """Listed once per `__path__` (every render asks for its target's kind)."""
    return tuple(sorted({m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_")}))


def lb_kind(name: str) -> LbKind:
    """The kind called `name`; `ConfigError` naming the known ones when there is none."""
    if name not in kind_names():
        raise ConfigError(f"unknown LB kind {name!r:.100} (known: {', '.join(kind_names())})")
    return _load(name)


@functools.lru_cache(maxsize=None)
def _load(name: str) -> LbKind:
    kind = getattr(importlib.import_module(f"{__name__}.{name}"), "KIND", None)
    if not isinstance(kind, LbKind) or kind.name != name:
        raise ConfigError(f"LB kind module {__name__}.{name} defines no KIND named {name!r}")
    return kind


def all_kinds() -> tuple[LbKind, ...]:
    """Every kind, loaded (the renderer registers all their filters and globals)."""
    return tuple(lb_kind(name) for name in kind_names())


def guess_kind(check: Sequence[str]) -> str:
    """The kind whose built-in check runs the program `check` runs, else `generic`."""
    program = posixpath.basename(check[0]) if check else ""
    for kind in all_kinds():
        if kind.check and program == posixpath.basename(kind.check[0]):
            return kind.name
    return GENERIC
