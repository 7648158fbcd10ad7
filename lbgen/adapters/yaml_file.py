"""Reading YAML documents (settings, deploy specs, the file registry) with errors that point at a line.

Every YAML input is bounded like a registry value (issue 10 part 2, issue 14 part 4): its size is
checked before parsing, its nesting depth while composing (PyYAML recurses per level), and the
number of nodes it expands to, counting each alias as the whole subtree it repeats, so an alias bomb
("billion laughs") or a recursive alias is refused instead of exhausting memory. A key written twice
in one mapping is an error naming both lines (YAML would silently keep the last). Integers remember
how they were written (`SourceInt`), so `mode: 644` can mean what `chmod 644` means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from lbgen.core.bounded import quote
from lbgen.core.fields import SourceInt
from lbgen.errors import ConfigError


@dataclass(frozen=True)
class YamlLimits:
    """Bounds for one kind of YAML input."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 200_000  # after expanding aliases


SETTINGS_LIMITS = YamlLimits()
REGISTRY_LIMITS = YamlLimits(max_bytes=64 * 1024 * 1024, max_nodes=2_000_000)


try:  # libyaml scans and parses ~10x faster (a 2,000-endpoint registry: 0.6 s → 0.1 s, issue 13)
    from yaml._yaml import CParser as _Parser
except ImportError:  # PyYAML built without libyaml: the pure-Python scanner and parser
    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _BoundedLoader(Composer, _Parser, SafeConstructor, Resolver):
    """A safe loader with the bounds above and duplicate keys refused. Composing stays in Python
    (`Composer` before the parser in the MRO): that is where the bounds are counted."""

    def __init__(self, stream: str, limits: YamlLimits) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.limits = limits
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[str, int] = {}  # anchor → nodes of its subtree, once composed

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.anchors and event.anchor not in self._sizes:
                raise ComposerError(None, None, f"alias *{event.anchor} refers to its own parent", event.start_mark)
            self._count(self._sizes.get(event.anchor, 1), event)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self.limits.max_depth:
            raise ComposerError(None, None, f"nested deeper than {self.limits.max_depth} levels", event.start_mark)
        before = self._nodes
        self._count(1, event)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if event.anchor is not None:
            self._sizes[event.anchor] = self._nodes - before
        return node

    def _count(self, nodes: int, event: yaml.Event) -> None:
        self._nodes += nodes
        if self._nodes > self.limits.max_nodes:
            raise ComposerError(None, None, f"more than {self.limits.max_nodes} nodes (aliases expanded)",
                                event.start_mark)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _refuse_duplicate_keys(loader: _BoundedLoader, node: MappingNode) -> None:
    """Keys written twice in `node` (merged `<<` keys may be overridden: that is what merging is for)."""
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            line = first.get(key)
        except TypeError:
            continue  # an unhashable key: the constructor reports it
        if line is not None:
            raise ConstructorError(None, None, f"duplicate key {quote(key)} (first on line {line})",
                                   key_node.start_mark)
        first[key] = key_node.start_mark.line + 1


def _construct_int(loader: _BoundedLoader, node: yaml.ScalarNode) -> SourceInt:
    return SourceInt(loader.construct_yaml_int(node), node.value)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
# What was read can be written back (the file registry rewrites its document): as a plain integer.
yaml.SafeDumper.add_representer(SourceInt, yaml.SafeDumper.represent_int)


def parse_yaml(text: str, source: str, limits: YamlLimits = SETTINGS_LIMITS) -> Any:
    """Parse `text`; any problem becomes `ConfigError("source:line:column: problem")`."""
    if len(text) > limits.max_bytes:
        raise ConfigError(f"{source}: {len(text)} characters, the limit is {limits.max_bytes}")
    loader = _BoundedLoader(text, limits)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {e}") from e
    finally:
        loader.dispose()


def load_yaml(path: str | Path, limits: YamlLimits = SETTINGS_LIMITS) -> Any:
    """Read and parse the YAML file at `path`; unreadable, too big or invalid → `ConfigError` naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limits.max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from e
    if len(raw) > limits.max_bytes:
        raise ConfigError(f"{path}: larger than {limits.max_bytes} bytes")
    return parse_yaml(raw.decode(errors="replace"), str(path), limits)
