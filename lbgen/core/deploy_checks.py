"""Value checkers for YAML documents: each takes `(field path, value)` and returns the checked value.

A failure raises `ConfigError` whose message starts with the field path, so a user sees exactly
which key of which file to fix (`services.web.update.drain: expected a duration ...`).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from lbgen.errors import ConfigError

HOST_PATH_RE = re.compile(r"/[A-Za-z0-9_.~/@+-]{0,4095}")
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
SIZE_RE = re.compile(r"(\d+)([bkmg]?)", re.IGNORECASE)
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
SIZES = {"b": 1, "": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY = 6 * 1024**2  # the Docker Engine refuses smaller limits
MISSING: Any = object()


class Fields:
    """Reads one YAML mapping at `path`: each key taken once, leftovers are unknown-key errors."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{path or 'spec'}: expected a mapping, got {kind(value)}")
        self.value, self.path, self.seen = value, path, set()

    def at(self, key: str) -> str:
        """The field path of `key` (`services.web.update.drain`)."""
        return f"{self.path}.{key}" if self.path else str(key)

    def raw(self, key: str, default: Any) -> Any:
        """The unchecked value of `key` (for nested mappings checked by their own reader)."""
        self.seen.add(key)
        return self.value.get(key, default)

    def take(self, key: str, check: Callable[[str, Any], Any], default: Any = MISSING) -> Any:
        self.seen.add(key)
        if key not in self.value:
            if default is MISSING:
                raise ConfigError(f"{self.at(key)}: required")
            return default
        return check(self.at(key), self.value[key])

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.value if k not in self.seen)
        if unknown:
            raise ConfigError(f"{self.at(unknown[0])}: unknown key")


def kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def int_in(low: int, high: int | None = None) -> Callable[[str, Any], int]:
    def check(path: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value >= low and (high is None or value <= high):
                return value
        bound = f"≥ {low}" if high is None else f"from {low} to {high}"
        raise ConfigError(f"{path}: expected an integer {bound}, got {value!r}")

    return check


def matching(pattern: re.Pattern[str], hint: str) -> Callable[[str, Any], str]:
    def check(path: str, value: Any) -> str:
        if isinstance(value, str) and pattern.fullmatch(value):
            return value
        raise ConfigError(f"{path}: expected {hint}, got {value!r}")

    return check


def choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(path: str, value: Any) -> str:
        if value in choices:
            return str(value)
        raise ConfigError(f"{path}: expected one of {', '.join(map(str, choices))}, got {value!r}")

    return check


def duration(path: str, value: Any) -> float:
    """`500ms`, `2s`, `1m`, `1h`, or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = DURATION_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{path}: expected a duration like 500ms, 2s or 1m, got {value!r}")
    return float(match.group(1)) * UNITS[match.group(2) or ""]


def memory_size(path: str, value: Any) -> int:
    """`256m`, `1g`, `512k` or a number of bytes, at least the Engine's 6 MiB."""
    match = SIZE_RE.fullmatch(str(value)) if isinstance(value, (int, str)) else None
    size = int(match.group(1)) * SIZES[match.group(2).lower()] if match else 0
    if isinstance(value, bool) or size < MIN_MEMORY:
        raise ConfigError(f"{path}: expected a size of at least 6m, like 256m or 1g, got {value!r}")
    return size


def cpu_count(path: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1024:
        return float(value)
    raise ConfigError(f"{path}: expected a number of CPUs above 0, like 0.5, got {value!r}")


def argv(path: str, value: Any) -> tuple[str, ...]:
    """An argv list of strings (no shell: a shell is an explicit `[sh, -c, ...]`)."""
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise ConfigError(f"{path}: expected a non-empty list of strings, got {value!r}")


def boolean(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{path}: expected true or false, got {value!r}")


def host_path(path: str, value: Any) -> str:
    if isinstance(value, str) and HOST_PATH_RE.fullmatch(value) and ".." not in value.split("/"):
        return value
    raise ConfigError(f"{path}: expected an absolute path (letters, digits, _.~/@+-), got {value!r}")
