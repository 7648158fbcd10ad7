"""What every quoting filter and the renderer's output guard share: the bare-token grammar."""

from __future__ import annotations

import re
from typing import Any

from lbgen.core.layout import UnsafeValue

# Nothing in this set opens a block, ends a directive, starts a comment, quotes or expands a variable.
BARE_RE = re.compile(r"[A-Za-z0-9_.:/@+=,%~*\[\]-]+")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def scalar_text(value: Any, dialect: str) -> str:
    """`value` as text for a quoting filter; `UnsafeValue` for anything but a non-empty scalar
    without control characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UnsafeValue(f"{dialect}: cannot quote a {type(value).__name__} ({value!r})")
    text = str(value)
    if not text or CONTROL_RE.search(text):
        raise UnsafeValue(f"{dialect}: refusing empty or control-character value {text!r}")
    return text
