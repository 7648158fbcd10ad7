"""Reading YAML settings files: parse errors with file:line, duplicate keys refused, and nested
mappings read with field paths in every error (`targets[1].reload: ...`).

Pure: callers read the file and pass its text.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, TypeVar

import yaml

from lbgen.errors import ConfigError

T = TypeVar("T")
_REQUIRED: Any = object()


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
                raise ConfigError(f"{self.field(key)}: required")
            return default
        try:
            return parse(self._data[key])
        except ValueError as e:
            raise ConfigError(f"{self.field(key)}: {e}") from e

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
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def expect_list(value: Any) -> list[Any]:
    """A list (YAML sequence)."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


def expect_str_list(value: Any) -> tuple[str, ...]:
    """A list of non-empty strings; numbers are refused so `[sleep, 1]` is caught, not guessed."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys: PyYAML keeps the last one silently, losing a setting."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML `text` read from `source` (a path, for messages): `lbgen.yaml:7:3: duplicate key 'wait'`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
