"""Durations and sizes as people write them in settings: `100ms`, `1.5s`, `2m`, `1h`, `0`; `64m`, `1g`."""

from __future__ import annotations

import re
from typing import Any

from lbgen.core.bounded import quote

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SIZES = {"b": 1, "": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE_RE = re.compile(r"(\d+)([bkmg]?)", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from `"100ms"`, `"2m"`, `0` or `"0"`; raises ValueError with the accepted form.

    A bare number other than 0 is refused: `wait: 5` is ambiguous (seconds? ms?), and consul-template
    users trip over exactly that.
    """
    if value == 0 and not isinstance(value, bool):
        return 0.0
    if isinstance(value, str):
        if value.strip() == "0":
            return 0.0
        match = _DURATION_RE.fullmatch(value.strip())
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"expected a duration like 100ms, 2s or 1m, got {quote(value)}")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 0.1 → `100ms`, 60 → `1m`, 1.5 → `1500ms`."""
    millis = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def parse_size(value: Any) -> int:
    """Bytes from `"64m"`, `"1g"`, `"512k"` or a bare number of bytes (binary units, as Docker's)."""
    match = _SIZE_RE.fullmatch(str(value).strip()) if isinstance(value, (int, str)) else None
    if match is None or isinstance(value, bool):
        raise ValueError(f"expected a size like 64m, 512k or 1g, got {quote(value)}")
    return int(match.group(1)) * _SIZES[match.group(2).lower()]
