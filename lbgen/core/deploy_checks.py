"""Value parsers for deploy specs, used with `fields.Section.take` (which adds the field path).

Each takes the YAML value and returns the checked one, or raises `ValueError` saying what was
expected; a nested section raises `ConfigError` with its own, deeper path.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from lbgen.core.bounded import quote
from lbgen.core.durations import parse_duration, parse_size

HOST_PATH_RE = re.compile(r"/[A-Za-z0-9_.~/@+-]{0,4095}")
MIN_MEMORY = 6 * 1024**2  # the Docker Engine refuses smaller limits


def int_in(low: int, high: int | None = None) -> Callable[[Any], int]:
    """An integer (not a bool) from `low` (to `high`)."""

    def parse(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value >= low and (high is None or value <= high):
                return value
        bound = f"≥ {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"expected an integer {bound}, got {quote(value)}")

    return parse


def matching(pattern: re.Pattern[str], hint: str) -> Callable[[Any], str]:
    """A string matching `pattern` entirely; `hint` says what that looks like."""

    def parse(value: Any) -> str:
        if isinstance(value, str) and pattern.fullmatch(value):
            return value
        raise ValueError(f"expected {hint}, got {quote(value)}")

    return parse


def choice(choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    """One of `choices`."""

    def parse(value: Any) -> Any:
        if value in choices and not isinstance(value, bool):
            return value
        raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {quote(value)}")

    return parse


def duration(value: Any) -> float:
    """`500ms`, `2s`, `1m`, `1h` or 0 (a bare number is ambiguous: see `durations`)."""
    return parse_duration(value)


def memory_size(value: Any) -> int:
    """`256m`, `1g`, `512k` or a number of bytes, at least the Engine's 6 MiB."""
    try:
        size = parse_size(value)
    except ValueError:
        size = 0
    if size < MIN_MEMORY:
        raise ValueError(f"expected a size of at least 6m, like 256m or 1g, got {quote(value)}")
    return size


def cpu_count(value: Any) -> float:
    """A number of CPUs above 0 (`0.5` = half of one), as `docker run --cpus`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1024:
        return float(value)
    raise ValueError(f"expected a number of CPUs above 0, like 0.5, got {quote(value)}")


def argv(value: Any) -> tuple[str, ...]:
    """A non-empty argv list of strings (no shell: a shell is an explicit `[sh, -c, ...]`)."""
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise ValueError(f"expected a non-empty list of strings, got {quote(value)}")


def mapping(value: Any) -> dict[Any, Any]:
    """A YAML mapping (its keys are read by a `Section` of their own)."""
    if isinstance(value, dict):
        return value
    raise ValueError(f"expected a mapping, got {type(value).__name__}")


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {quote(value)}")


def host_path(value: Any) -> str:
    """An absolute path without `..`, and without `:` or `,` (they split Docker bind specs)."""
    if isinstance(value, str) and HOST_PATH_RE.fullmatch(value) and ".." not in value.split("/"):
        return value
    raise ValueError(f"expected an absolute path (letters, digits, _.~/@+-), got {quote(value)}")
