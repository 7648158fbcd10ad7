"""The registry of LB kinds' adapters: how lbgen talks to a running LB of each kind (issue 11).

`lbgen.adapters.kinds.<name>` defines `ADAPTER`, a `KindAdapter`, beside the kind's pure rules in
`lbgen.core.kinds.<name>`. The CLI builds the applier's controls and runtime APIs from it, and the
render worker its live-config readers; nothing outside the two `kinds` packages names a kind.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

from lbgen.core.kinds import lb_kind
from lbgen.core.model import Catalog
from lbgen.core.settings import Target
from lbgen.ports import Clock, LbControl, RuntimeApi


class LiveContext(Protocol):
    """A renderer's reader of the live config: the extra render context the kind's template
    globals read (HAProxy: where each endpoint sits, so it stays there), told each rendered text."""

    def context(self, target: Target, catalog: Catalog) -> Mapping[str, Any]:
        """The extra context for rendering `catalog` for `target`."""
        ...

    def rendered(self, target: Target, text: str) -> None:
        """`text` was just rendered for `target` (it may not be live yet)."""
        ...


class KindAdapter(msgspec.Struct, frozen=True):
    """What one kind brings beyond its pure rules; None where it has nothing of the sort.

    `control`: the built-in check of the whole config, reload and verify (`LbControl`); None: the
    target's own argv do everything. `runtime`: its runtime API, for targets with `runtime` on.
    `live_context`: a new reader of the live config, one per render worker.
    """

    control: Callable[[Target, Clock], LbControl[Any]] | None = None
    runtime: Callable[[Target, Clock], RuntimeApi] | None = None
    live_context: Callable[[], LiveContext] | None = None


def kind_adapter(name: str) -> KindAdapter:
    """The adapter of kind `name` (`ConfigError` for an unknown kind, as `lb_kind`)."""
    lb_kind(name)
    return _load(name)


@functools.lru_cache(maxsize=None)
def _load(name: str) -> KindAdapter:
    adapter = getattr(importlib.import_module(f"{__name__}.{name}"), "ADAPTER", None)
    if not isinstance(adapter, KindAdapter):
        raise TypeError(f"{__name__}.{name} defines no ADAPTER (a KindAdapter)")
    return adapter


def control_for(target: Target, clock: Clock) -> LbControl[Any] | None:
    """The built-in LB control of the target's kind (None: its argv do everything)."""
    make = kind_adapter(target.kind).control
    return make(target, clock) if make else None


def runtime_for(target: Target, clock: Clock) -> RuntimeApi | None:
    """The runtime API of the target's kind when the target has `runtime` on, else None."""
    make = kind_adapter(target.kind).runtime
    return make(target, clock) if make and target.runtime else None
