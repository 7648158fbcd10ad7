"""The endpoint block of an nginx config balanced by Lua (issue 12, docs/nginx-runtime.md).

With `runtime` on, the nginx template embeds every Lua-balanced upstream's served endpoints in
the rendered nginx.conf itself, inside `init_by_lua_block`, as a Lua long-bracket string:

    require("lbgen_endpoints").load_block([=[
    {"version":"1f0c..."}
    {"name":"web","balance":"roundrobin","endpoints":[{"address":"10.0.0.1","port":8080,"weight":1}]}
    ]=])

one JSON object per line: the version first (a digest of the sets), then one upstream per line,
sorted by name. nginx loads it into a shared dict at every start and reload, so the file on disk
is what runs. A change confined to these lines moves endpoints only: `plan_endpoints` turns it
into the sets the control API must set; anything else in the text is a reload.

An upstream is Lua-balanced when it is an HTTP service whose served endpoints all have IP
addresses without a zone (`ngx.balancer` connects to addresses; a host name needs a resolver):
the template renders the others with `server` lines, as without `runtime`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lbgen.core.layout import ServiceView, Verbatim
from lbgen.core.schema import is_ip

OPEN_PREFIX = 'require("lbgen_endpoints").load_block(['
_OPEN_RE = re.compile(r'\s*require\("lbgen_endpoints"\)\.load_block\(\[(=*)\[')
_VERSION_CHARS = 16  # hex digits of the digest: the control API takes up to 64 characters
_MIB = 1 << 20


@dataclass(frozen=True)
class EndpointBlock:
    """What the template writes: `open`, then `lines`, then `close`, each on a line of its own.
    `upstreams`: the Lua-balanced upstreams' names; `dict_size`: the default `lua_shared_dict`
    size for them (`4m`, ...)."""

    open: Verbatim
    lines: tuple[Verbatim, ...]
    close: Verbatim
    upstreams: frozenset[str]
    version: str
    dict_size: Verbatim


@dataclass(frozen=True)
class EndpointPlan:
    """The control API's write: the new version and the new set of every upstream that changed.

    `needs_check` is False: the lines that differ are lbgen's own encoding of validated values,
    and every other byte of the file is the running (checked) config's, so the applier writes the
    file (atomically, last-known-good first) without running `nginx -t` over it; at 10,000
    services that check costs seconds of CPU per change (docs/nginx-runtime.md)."""

    version: str
    upstreams: Mapping[str, Mapping[str, Any]]
    needs_check: bool = False

    def __len__(self) -> int:
        return len(self.upstreams)


def lua_balanced(service: ServiceView) -> bool:
    """Whether the Lua balancer can serve `service`: HTTP, and only IP literals without a zone."""
    return service.mode == "http" and all(is_ip(e.address) and "%" not in e.address for e in service.endpoints)


def endpoint_set(service: ServiceView) -> dict[str, Any]:
    """The set the Lua side stores for `service` (also the control API's format)."""
    endpoints = [{"address": e.address, "port": e.port, "weight": e.weight} for e in service.endpoints]
    return {"balance": service.balance, "endpoints": endpoints}


def endpoint_block(services: Iterable[ServiceView]) -> EndpointBlock:
    """The block for the Lua-balanced ones among `services` (see the module docstring)."""
    balanced = sorted((s for s in services if lua_balanced(s)), key=lambda s: s.name)
    lines = [_dump({"name": s.name, **endpoint_set(s)}) for s in balanced]
    version = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:_VERSION_CHARS]
    lines.insert(0, _dump({"version": version}))
    level = bracket_level(lines)
    return EndpointBlock(
        open=Verbatim(f"{OPEN_PREFIX}{'=' * level}["),
        lines=tuple(Verbatim(line) for line in lines),
        close=Verbatim(f"]{'=' * level}])"),
        upstreams=frozenset(s.name for s in balanced),
        version=version,
        dict_size=Verbatim(f"{dict_megabytes(lines)}m"),
    )


def bracket_level(lines: Sequence[str]) -> int:
    """The smallest level n >= 1 of a Lua long bracket `[=*n[ ... ]=*n]` that no line can close."""
    level = 1
    while any(f"]{'=' * level}]" in line for line in lines):
        level += 1
    return level


def dict_megabytes(lines: Sequence[str]) -> int:
    """A `lua_shared_dict` size for these lines, in MiB: each set is stored once (plus keys and
    the dict's per-entry overhead, about 300 bytes for an upstream's three entries), doubled for
    headroom, rounded up to a power of two so that it changes (a reload) only when the catalog
    doubles or halves."""
    needed = 2 * sum(len(line) + 300 for line in lines)
    return 1 << max(0, math.ceil(math.log2(max(1, math.ceil(needed / _MIB)))))


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def plan_endpoints(old: str, new: str) -> EndpointPlan | None:
    """The sets turning the running `old` config into `new` when they differ only inside the
    endpoint block, in lines of upstreams both declare; None when anything else differs (reload).

    Only the differing lines are decoded: the block has one line per upstream, sorted by name, so
    a line at the same place in both is the same upstream when its name is the same.
    """
    old_lines, new_lines = old.splitlines(), new.splitlines()
    old_span, new_span = _block_span(old_lines), _block_span(new_lines)
    if old_span is None or new_span is None or old_span != new_span:
        return None  # no block, or a different number of lines before it or in it
    first, end = new_span
    if old_lines[:first] != new_lines[:first] or old_lines[end:] != new_lines[end:]:
        return None
    version, changed = None, {}
    for i in range(first, end):
        if old_lines[i] == new_lines[i]:
            continue
        before, after = _item(old_lines[i]), _item(new_lines[i])
        if before is None or after is None or before[0] != after[0]:
            return None
        if after[0] == "":
            version = after[1].get("version")
        else:
            changed[after[0]] = after[1]
    if version is None and not changed:  # the same block: nothing to set
        version = (_item(new_lines[first]) or ("", {}))[1].get("version")
    if not isinstance(version, str):
        return None  # sets changed, the version did not: not a block lbgen wrote
    return EndpointPlan(version, changed)


def _block_span(lines: list[str]) -> tuple[int, int] | None:
    """[first, end) of the block's content lines: after the opener, up to the closer."""
    for i, line in enumerate(lines):
        opened = _OPEN_RE.fullmatch(line) if OPEN_PREFIX in line else None
        if opened:
            close = f"]{opened.group(1)}])"
            for j in range(i + 1, len(lines)):
                if lines[j].strip() == close:
                    return i + 1, j
            return None
    return None


def _item(line: str) -> tuple[str, dict[str, Any]] | None:
    """(name, set) of an upstream's line, ("", {"version": ...}) of the version line, else None."""
    try:
        item = json.loads(line)
    except ValueError:
        return None
    if not isinstance(item, dict):
        return None
    if "version" in item:
        return "", item
    name = item.pop("name", None)
    return (name, item) if isinstance(name, str) and name else None
