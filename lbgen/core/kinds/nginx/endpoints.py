"""The endpoint block of an nginx config balanced by Lua (issue 12, docs/nginx-runtime.md).

With `runtime` on, the nginx template embeds every Lua-balanced upstream's served endpoints in
the rendered nginx.conf itself, inside `init_by_lua_block`:

    local add = require("lbgen_endpoints").loader(); (function()
    add[=[{"version":"1f0c..."}]=]
    add[=[{"name":"web","balance":"roundrobin","endpoints":[{"address":"10.0.0.1","port":8080,"weight":1}]}]=]
    end)(); add()

one Lua long-bracket string of JSON per line: the version first (a digest of the sets), then the
upstreams sorted by name. nginx's Lua block parser refuses a string that does not fit in half of
its 4 KB config buffer (wherever the buffer's edge falls), so an upstream whose endpoints do not
fit in `LINE_BYTES` continues on the next lines (same name, more endpoints). nginx loads the
lines into a shared dict at every start and reload, so the file on disk is what runs. A change
confined to these lines moves endpoints only: `plan_endpoints` turns it into the sets the control
API must set; anything else is a reload.

An upstream is Lua-balanced when it is an HTTP service whose served endpoints all have IP
addresses without a zone (`ngx.balancer` connects to addresses; a host name needs a resolver):
the template renders the others with `server` lines, as without `runtime`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from lbgen.core.layout import ServiceView, Verbatim, memo
from lbgen.core.addresses import is_ip

# The lines run inside functions of at most PER_FUNCTION lines each: LuaJIT refuses a function
# with more than 65,536 constants, and every line is one (nginx would not start at ~65,000 upstreams).
OPEN = 'local add = require("lbgen_endpoints").loader(); (function()'
SEPARATOR = "end)(); (function()"
CLOSE = "end)(); add()"
PER_FUNCTION = 20_000
# nginx's Lua block parser looks for a long string's closing bracket in what its 4 KB config
# buffer holds, which it refills only when under half of it is left: a line (indentation and
# `add[=[ ]=]` included) must fit in 2 KB wherever the buffer's edge falls.
LINE_BYTES = 1800
# What plan_endpoints reads of a line without decoding it: the key of its first field.
_LINE_RE = re.compile(r'add\[(=*)\[\{"(name|version)":"([^"\\]*)"')
_CALL_RE = re.compile(r"add\[(=*)\[(.*)\]\1\]")
_VERSION_CHARS = 16  # hex digits of the digest: the control API takes up to 64 characters
_MIB = 1 << 20


class EndpointBlock(msgspec.Struct, frozen=True):
    """What the template writes: `open`, then `lines`, then `close`, each on a line of its own.
    `upstreams`: the Lua-balanced upstreams' names; `dict_size`: the default `lua_shared_dict`
    size for them (`4m`, ...)."""

    lines: tuple[Verbatim, ...]
    upstreams: frozenset[str]
    version: str
    dict_size: Verbatim
    open: Verbatim = Verbatim(OPEN)
    close: Verbatim = Verbatim(CLOSE)


class EndpointPlan(msgspec.Struct, frozen=True):
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


class _Last:
    """The last block made and what from: the same views tuple gives it again (every render of a
    pass, and the render itself after `warm` made it). Replaced whole."""

    block: tuple[tuple[ServiceView, ...], int, EndpointBlock] | None = None


def endpoint_block(services: Iterable[ServiceView], per_function: int = PER_FUNCTION) -> EndpointBlock:
    """The block for the Lua-balanced ones among `services` (see the module docstring); a
    `SEPARATOR` line after every `per_function` lines."""
    views = services if type(services) is tuple else tuple(services)
    last = _Last.block
    if last is not None and last[0] is views and last[1] == per_function:
        return last[2]
    block = _block(views, per_function)
    _Last.block = (views, per_function, block)
    return block


def warm(views: Sequence[ServiceView], variables: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """With `runtime` on, the endpoint block, made by the render worker before it limits the
    render: its lines, remembered per service view, then do not count against `render_memory`
    and are reused by the next render (encoding every upstream again cost ~0.5 s per render at
    100,000 endpoints, issue 13)."""
    if context.get("runtime"):
        endpoint_block(views)


def _block(services: tuple[ServiceView, ...], per_function: int) -> EndpointBlock:
    lines = {s.name: _CHUNKS.get(s, None, functools.partial(_lines, s)) for s in services}
    balanced = sorted(name for name, chunks in lines.items() if chunks is not None)
    texts = [text for name in balanced for text, _ in lines[name] or ()]
    version = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:_VERSION_CHARS]
    texts.insert(0, _dump({"version": version}))
    calls = [Verbatim(lua_string_call(texts[0]))] + [call for name in balanced for _, call in lines[name] or ()]
    return EndpointBlock(
        lines=tuple(_separated(calls, per_function)),
        upstreams=frozenset(balanced),
        version=version,
        dict_size=Verbatim(f"{dict_megabytes(texts)}m"),
    )


def _separated(lines: list[Verbatim], per_function: int) -> list[Verbatim]:
    """`lines` with `SEPARATOR` between each run of `per_function` of them."""
    out: list[Verbatim] = []
    for start in range(0, len(lines), per_function):
        out += ([Verbatim(SEPARATOR)] if start else []) + lines[start:start + per_function]
    return out


# An unchanged service is the same view object from render to render (`lbgen.core.layout`): whether
# Lua balances it and its lines are worked out once, not at every render (100,000 endpoints cost
# ~0.4 s to encode).
_CHUNKS = memo("nginx.endpoint_lines")


def _lines(service: ServiceView) -> list[tuple[str, Verbatim]] | None:
    """The JSON lines of `service`, each with its `add[=[...]=]` call, or None when the Lua
    balancer does not serve it."""
    return [(text, Verbatim(lua_string_call(text))) for text in _chunks(service)] if lua_balanced(service) else None


def _chunks(service: ServiceView) -> list[str]:
    """The JSON lines of one upstream: its endpoints split so that each line fits `LINE_BYTES`."""
    head = {"name": service.name, "balance": service.balance}
    budget = LINE_BYTES - len(_dump({**head, "endpoints": []}))
    chunks: list[list[dict[str, Any]]] = [[]]
    used = 0
    for endpoint in endpoint_set(service)["endpoints"]:
        size = len(_dump(endpoint)) + 1
        if chunks[-1] and used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(endpoint)
        used += size
    return [_dump({**head, "endpoints": chunk}) for chunk in chunks]


def lua_string_call(text: str) -> str:
    """`add[=[text]=]`: a call with `text` as a long-bracket string of a level it cannot close."""
    level = bracket_level([text])
    return f"add[{'=' * level}[{text}]{'=' * level}]"


def bracket_level(lines: Sequence[str]) -> int:
    """The smallest level n >= 1 of a Lua long bracket `[=*n[ ... ]=*n]` that no line can close
    (nor end in `]=*n`, which would join the closer)."""
    level = 1
    while any(f"]{'=' * level}]" in line or line.endswith("]" + "=" * level) for line in lines):
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

    Lines are grouped by the name at their start without decoding them; only the upstreams whose
    lines differ are decoded (a one-endpoint change at 10,000 services decodes one upstream).
    """
    old_lines, new_lines = old.splitlines(), new.splitlines()
    old_span, new_span = _block_span(old_lines), _block_span(new_lines)
    if old_span is None or new_span is None:
        return None
    if old_lines[:old_span[0]] != new_lines[:new_span[0]] or old_lines[old_span[1]:] != new_lines[new_span[1]:]:
        return None
    before, after = _groups(old_lines, old_span), _groups(new_lines, new_span)
    if before is None or after is None or before.keys() != after.keys():
        return None
    try:
        version = _decode(after[""])["version"]
        changed = {name: _decode(lines) for name, lines in after.items() if name and lines != before[name]}
    except (ValueError, KeyError, TypeError):
        return None
    return EndpointPlan(version, changed) if isinstance(version, str) else None


def _block_span(lines: list[str]) -> tuple[int, int] | None:
    """[first, end) of the block's lines: after the opener, up to the closer."""
    for i, line in enumerate(lines):
        if line.strip() == OPEN:
            for j in range(i + 1, len(lines)):
                if lines[j].strip() == CLOSE:
                    return i + 1, j
            return None
    return None


def _groups(lines: list[str], span: tuple[int, int]) -> dict[str, list[str]] | None:
    """name → its lines ("" → the version line), or None when a line is not one of ours."""
    groups: dict[str, list[str]] = {}
    for line in lines[span[0]:span[1]]:
        if line.strip() == SEPARATOR:
            continue  # where it falls moves with the line count: not a change
        match = _LINE_RE.match(line.lstrip())
        if match is None or (match[2] == "version") != (not groups):
            return None  # not ours, or the version line is not first (or comes again)
        groups.setdefault("" if match[2] == "version" else match[3], []).append(line)
    return groups if "" in groups else None


def _decode(lines: list[str]) -> dict[str, Any]:
    """The set (or version) of an upstream's lines: their JSON, endpoints joined."""
    merged: dict[str, Any] = {}
    for line in lines:
        call = _CALL_RE.fullmatch(line.strip())
        item = json.loads(call[2]) if call else None
        if not isinstance(item, dict):
            raise ValueError(f"not a line of the block: {line[:100]!r}")
        item.pop("name", None)
        if "endpoints" in merged:
            merged["endpoints"] = merged["endpoints"] + item["endpoints"]
        else:
            merged = item
    return merged
