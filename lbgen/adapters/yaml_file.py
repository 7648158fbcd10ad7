"""Reading YAML documents (settings, deploy specs, the file registry) with errors that point at a line.

Every YAML input is bounded like a registry value (issue 10 part 2, issue 14 part 4): its size is
checked before parsing, its nesting depth while composing (PyYAML recurses per level), and the
number of nodes it expands to, counting each alias as the whole subtree it repeats, so an alias bomb
("billion laughs") or a recursive alias is refused instead of exhausting memory. A key written twice
in one mapping is an error naming both lines (YAML would silently keep the last). Integers remember
how they were written (`SourceInt`), so `mode: 644` can mean what `chmod 644` means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from lbgen.core.bounded import quote
from lbgen.core.fields import SourceInt
from lbgen.errors import ConfigError


class YamlLimits(msgspec.Struct, frozen=True):
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


class _Unusual(Exception):
    """The fast path met something it leaves to the full loader (which gives the verdict)."""


_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_EVENT, _MAPPING_START, _SEQUENCE_START = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
_MAPPING_END, _SEQUENCE_END = yaml.MappingEndEvent, yaml.SequenceEndEvent


def _plain_data(loader: _BoundedLoader) -> Any:
    """The document built straight from the parser's events, for the common case: no anchor, alias,
    explicit tag, merge key, complex or duplicate key, within the depth and node bounds, one
    document. Scalars resolve and construct as the full loader does (same resolver and
    constructors); anything else raises `_Unusual`. Issue 13: composing a node tree in Python
    cost ~0.1 s of a one-shot render of 2,000 endpoints."""
    limits, nodes, get_event = loader.limits, 0, loader.get_event
    stack: list[list[Any]] = [[]]  # the open containers' items (a mapping's: key, value, ...); [0]: the document
    top = stack[0]
    known: _Known = {}  # the scalars seen, each resolved and constructed once
    seen = known.get
    while True:  # names bound locally: this loop runs once per event, 25,000 times for 2,000 endpoints
        event = get_event()
        kind = type(event)
        if kind is _SCALAR_EVENT:
            if event.anchor is not None or event.tag is not None:
                raise _Unusual
            value = seen((event.value, event.implicit), _Unusual)
            top.append(_scalar(loader, event, known) if value is _Unusual else value)
            nodes += 1
        elif kind is _MAPPING_START or kind is _SEQUENCE_START:
            if event.anchor is not None or event.tag is not None or len(stack) >= limits.max_depth:
                raise _Unusual  # a container at the depth bound: the full loader judges its content
            top = []
            stack.append(top)
            nodes += 1
        elif kind is _SEQUENCE_END or kind is _MAPPING_END:
            items = stack.pop()
            top = stack[-1]
            top.append(items if kind is _SEQUENCE_END else _mapping(items))
        elif kind is not yaml.StreamStartEvent and kind is not yaml.DocumentStartEvent:
            break  # the document's end, or an alias
    if len(stack) != 1 or nodes > limits.max_nodes or kind is yaml.AliasEvent or \
            (kind is yaml.DocumentEndEvent and not loader.check_event(yaml.StreamEndEvent)):
        raise _Unusual  # an alias, too many nodes, a second document: the full loader decides
    return stack[0][0] if stack[0] else None


def _mapping(items: list[Any]) -> dict[Any, Any]:
    """A mapping from its keys and values in turn; a complex (unhashable) or repeated key is left to
    the full loader, which names it."""
    try:
        data = dict(zip(items[::2], items[1::2]))
    except TypeError:
        raise _Unusual from None
    if 2 * len(data) != len(items):
        raise _Unusual
    return data


_Known = dict[tuple[str, tuple[bool, bool]], Any]


def _scalar(loader: _BoundedLoader, event: yaml.ScalarEvent, known: _Known) -> Any:
    """The scalar's value, as the full loader would construct it. The same text in the same style
    resolves alike, and every constructed scalar is immutable: each is made once (a registry repeats
    `port: 8080`, `health: healthy` thousands of times)."""
    key = (event.value, event.implicit)
    if key in known:
        return known[key]
    tag = loader.resolve(ScalarNode, event.value, event.implicit)
    if tag == _MERGE:
        raise _Unusual  # `<<`: merging is the full loader's
    if tag == _STR:
        value = event.value
    elif tag == _NULL:
        value = None
    else:
        value = loader.construct_object(ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style))
    known[key] = value
    return value


def parse_yaml(text: str, source: str, limits: YamlLimits = SETTINGS_LIMITS) -> Any:
    """Parse `text`; any problem becomes `ConfigError("source:line:column: problem")`. A plain
    document is built straight from the parser's events; any other goes through the full loader."""
    if len(text) > limits.max_bytes:
        raise ConfigError(f"{source}: {len(text)} characters, the limit is {limits.max_bytes}")
    fast = _BoundedLoader(text, limits)
    try:
        return _plain_data(fast)
    except (_Unusual, yaml.YAMLError, ValueError, OverflowError):
        pass  # the full loader gives the verdict
    finally:
        fast.dispose()
    loader = _BoundedLoader(text, limits)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {e}") from e
    except (ValueError, OverflowError) as e:  # a constructor's own: `2001-13-45` resolves as a date
        raise ConfigError(f"{source}: {str(e)[:100]}") from e
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
