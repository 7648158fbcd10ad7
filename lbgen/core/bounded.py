"""Bounded decoding of untrusted bytes, and short quotes of untrusted values (issue 10 part 2).

Anyone who can write under the prefix can store any bytes. `json.loads` recurses once per nesting
level, so ~1,000 brackets (2 KB) raised `RecursionError` in every reader and crashed the watcher and
the agent. `load_json` turns any bytes into a value or an `InvalidValue` with a one-line reason:
size is checked before parsing, depth by scanning brackets (no recursion), lengths after.
`quote` keeps every message that echoes a value to about 100 characters.

Parsing goes through msgspec's JSON decoder first (issue 13): at 110,000 values, a watcher's start
on a large registry, it costs less than half the CPU of `json.loads`. Whatever msgspec refuses is
parsed again by `json.loads`, which gives the reason (and accepts the few inputs msgspec does not:
a lone surrogate escape, a float that overflows to infinity), so every value decodes and every
rejection reads exactly as with the standard library alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from lbgen.errors import InvalidValue

MAX_VALUE_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_ITEMS = 1024  # elements of one list, or keys of one object
QUOTE_CHARS = 100

_JSON_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_FAST = msgspec.json.Decoder()


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters with the full length said: `'aaa…' (2000000 chars)`."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} {'chars' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def load_json(raw: bytes | str, max_bytes: int = MAX_VALUE_BYTES) -> Any:
    """The JSON value in `raw`, or `InvalidValue`: over `max_bytes`, nested deeper than `MAX_DEPTH`,
    a list or object longer than `MAX_ITEMS`, NaN/Infinity, or not JSON (never another exception)."""
    size = len(raw.encode(errors="surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise InvalidValue(f"value of {size} bytes: the limit is {max_bytes}")
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise InvalidValue(f"not UTF-8: {e.reason} at byte {e.start}") from e
    check_depth(text)
    try:
        value = _FAST.decode(text)
    except (msgspec.DecodeError, ValueError):  # ValueError: a lone surrogate, which json.loads keeps
        value = _standard_json(text)
    if text.count(",") >= MAX_ITEMS:  # fewer commas: no list or object can hold more than MAX_ITEMS
        check_lengths(value)
    return value


def _standard_json(text: str) -> Any:
    """`json.loads` with NaN/Infinity refused; its error, quoted, is the rejection's reason."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:  # RecursionError: a last resort, check_depth comes first
        raise InvalidValue(f"not JSON: {quote(str(e))}") from e


def check_depth(text: str) -> None:
    """Refuse JSON text nested deeper than `MAX_DEPTH`, without recursion (brackets in strings ignored)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return  # the common case: too few brackets to nest that deep
    depth = 0
    for bracket in _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub('""', text)):
        depth = depth + 1 if bracket in "[{" else depth - 1
        if depth > MAX_DEPTH:
            raise InvalidValue(f"nested deeper than {MAX_DEPTH} levels")


def check_lengths(value: Any) -> None:
    """Refuse a list or object (anywhere in `value`) with more than `MAX_ITEMS` items; iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if len(children) > MAX_ITEMS:
            raise InvalidValue(f"a {type(item).__name__} of {len(children)} items: the limit is {MAX_ITEMS}")
        stack.extend(children)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
