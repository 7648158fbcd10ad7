"""nginx's pure rules: its built-in check, its quoting filter (`nginx`), guarded outputs."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from lbgen.core.kinds import LbKind
from lbgen.core.layout import UnsafeValue, Verbatim
from lbgen.core.quoting import BARE_RE, scalar_text


def nginx_quote(value: Any) -> Verbatim:
    """An nginx directive argument: bare when safe, else double-quoted with `\\` escapes.

    `$` is refused: nginx expands variables even inside quotes and has no escape for it.
    """
    text = scalar_text(value, "nginx")
    if BARE_RE.fullmatch(text):
        return Verbatim(text)
    if "$" in text:
        raise UnsafeValue(f"nginx: refusing {text!r}: '$' would be expanded as a variable")
    return Verbatim('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


KIND = LbKind(
    name="nginx",
    check=("nginx", "-t", "-q", "-c", "{staged}"),
    guarded=True,
    filters=MappingProxyType({"nginx": nginx_quote}),
)
