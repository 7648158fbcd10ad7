"""Reading nested settings mappings with field paths in every error (`targets[1].reload: ...`)."""

from __future__ import annotations

import difflib
from typing import Any, Callable, TypeVar

from lbgen.core.bounded import quote
from lbgen.errors import ConfigError

T = TypeVar("T")
_REQUIRED: Any = object()


class ElementError(ValueError):
    """Element `index` of a list is wrong: the field path becomes `check[2]`."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"[{index}]: {why}")
        self.index, self.why = index, why


class SourceInt(int):
    """An integer read from YAML that remembers how it was written (`644`, `0644`, `0x1a4`), for
    fields where the digits matter more than YAML's reading of them (a file mode)."""

    text: str

    def __new__(cls, value: int, text: str = "") -> "SourceInt":
        number = super().__new__(cls, value)
        number.text = text
        return number


class Section:
    """One mapping being read: each key is taken once, and `done()` rejects whatever is left.

    Parsers passed to `take` raise `ValueError` with what was expected; it becomes a `ConfigError`
    prefixed with the field's path. A `ConfigError` a parser raises itself passes through as is.
    """

    def __init__(self, data: Any, path: str) -> None:
        if data is None and path:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'settings'}: expected a mapping, got {type(data).__name__}")
        self.path = path
        self._data = data
        self._taken: set[str] = set()

    def field(self, key: str) -> str:
        """The path of `key` in this section."""
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str, parse: Callable[[Any], T], default: T = _REQUIRED) -> T:
        """The parsed value of `key`, or `default` when absent (absent and no default: an error)."""
        self._taken.add(key)
        if key not in self._data or self._data[key] is None:
            if default is _REQUIRED:
                self._reject_misspelling_of(key)
                raise ConfigError(f"{self.field(key)}: required")
            return default
        try:
            return parse(self._data[key])
        except ElementError as e:
            raise ConfigError(f"{self.field(key)}[{e.index}]: {e.why}") from e
        except ValueError as e:
            raise ConfigError(f"{self.field(key)}: {e}") from e

    def _reject_misspelling_of(self, key: str) -> None:
        """A required key is missing: when a key not read yet looks like it (`imgae` for `image`),
        the typo is the error to report, not the missing key."""
        unread = [str(k) for k in self._data if k not in self._taken]
        close = difflib.get_close_matches(key, unread, n=1)
        if close:
            raise ConfigError(f"{self.field(close[0])}: unknown setting (did you mean {key!r}?)")

    def done(self) -> None:
        """Reject keys nobody took: a typo must not silently drop a setting."""
        for key in self._data:
            if key not in self._taken:
                close = difflib.get_close_matches(str(key), sorted(self._taken), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{self.field(str(key))}: unknown setting{hint}")


def expect_str(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {quote(value)}")
    return value


def expect_list(value: Any) -> list[Any]:
    """A list (YAML sequence)."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


def expect_str_list(value: Any) -> tuple[str, ...]:
    """A list of non-empty strings; numbers are refused so `[sleep, 1]` is caught, not guessed.
    The error names the first bad element: `[2]: expected a non-empty string, got True`."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ElementError(i, f"expected a non-empty string, got {_quote(item)}")
    return tuple(value)


def _quote(value: Any, limit: int = 100) -> str:
    """`repr(value)`, cut to `limit` characters: an error line never echoes a huge value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"

