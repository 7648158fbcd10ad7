"""The text each fragment rendered, per key, kept per target from one render to the next (issue 13).

A `FragmentCache` holds what the last successful render used (hits and new texts), nothing more:
memory stays about one rendered config. A render works on a `FragmentSession`, a snapshot of the
cache: it records the positions it hit and the texts it rendered, and `commit()` makes those the
cache. A render that fails commits nothing. A forked renderer's child sends its session's
`delta()` back; the parent's session (the same snapshot, made before the fork) `commit_delta`s it.

An identity-keyed value (a `ServiceView`) is held by every entry whose key has its id, so the id
cannot be reused by another object while the entry lives.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jinja2

from lbgen.core.fragments import Fragment, FragmentText, Rules

__all__ = ["Delta", "FragmentCache", "FragmentSession"]

_MAX_KEY_PARTS = 20_000  # a larger value (all of `services`) renders uncached: keying it costs more

Key = tuple[Hashable, ...]
Delta = tuple[list[int], list[tuple[Key, str, tuple[int, ...]]]]  # positions hit; new (key, text, ids)
_State = tuple[list[Key], list[FragmentText], list[tuple[object, ...]], dict[Key, int]]
_EMPTY: _State = ([], [], [], {})
_SCALARS = (str, int, type(None))
_IMMUTABLE = (dict, MappingProxyType, tuple, list)  # in the sandbox: `vars`, `spec`, a `{...}` literal


class FragmentCache:
    """One target's fragment texts (per template: keys start with the fragment's uid)."""

    def __init__(self) -> None:
        self.state: _State = _EMPTY

    def session(self, rules: Rules) -> FragmentSession:
        return FragmentSession(self, rules)

    def __len__(self) -> int:
        return len(self.state[0])


class _Unkeyable(Exception):
    """A value the key cannot stand for: the body renders uncached."""


class FragmentSession:
    """One render's view of a `FragmentCache`: the `__lbgen_fragments` of its context."""

    def __init__(self, cache: FragmentCache, rules: Rules) -> None:
        self._cache, self._base, self._keys = cache, cache.state, _Keys(rules)
        self.used: list[int] = []
        self.new: dict[Key, tuple[FragmentText, tuple[object, ...]]] = {}

    def text(self, fragment: Fragment, context: jinja2.runtime.Context, values: Sequence[Any]) -> FragmentText:
        """The body's text for these values: remembered for an equal key, else rendered."""
        try:
            key, refs = self._keys.of(fragment, context, values)
        except _Unkeyable:
            return fragment.render(context, values)
        position = self._base[3].get(key)
        if position is not None:
            self.used.append(position)
            return self._base[1][position]
        if key in self.new:
            return self.new[key][0]
        text = fragment.render(context, values)
        self.new[key] = (text, refs)
        return text

    def commit(self) -> None:
        """Keep what this render used, and drop the rest (call after a successful render)."""
        self._store([(k, t, r) for k, (t, r) in self.new.items()], self.used)

    def delta(self) -> Delta:
        """What `commit_delta` needs, as plain data (identity-keyed objects by id)."""
        return self.used, [(k, str(t), tuple(id(r) for r in refs)) for k, (t, refs) in self.new.items()]

    def commit_delta(self, delta: Delta, objects: Mapping[int, object]) -> None:
        """`commit` with a child's `delta`; `objects`: id → each object alive in this process at
        the fork (the render's service views). An entry naming any other id is dropped."""
        used, new = delta
        entries = []
        for key, text, ids in new:
            refs = tuple(objects.get(i) for i in ids)
            if all(r is not None for r in refs):
                entries.append((key, FragmentText(text), refs))
        self._store(entries, used)

    def _store(self, new: list[tuple[Key, FragmentText, tuple[object, ...]]], used: list[int]) -> None:
        keys, texts, refs, _ = self._base
        kept = [i for i in dict.fromkeys(used) if 0 <= i < len(keys)]
        new_keys = [keys[i] for i in kept] + [k for k, _, _ in new]
        new_texts = [texts[i] for i in kept] + [t for _, t, _ in new]
        new_refs = [refs[i] for i in kept] + [r for _, _, r in new]
        self._cache.state = (new_keys, new_texts, new_refs, {k: i for i, k in enumerate(new_keys)})


class _Keys:
    """Keys of one render's values; containers remembered by identity for the render's length."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules
        self._memo: dict[int, tuple[object, Hashable, tuple[object, ...], tuple[Any, ...]]] = {}
        self._chain_memo: dict[tuple[int, Any], tuple[object, Hashable, tuple[object, ...], tuple[Any, ...]]] = {}
        self._refs: list[object] = []
        self._reads: list[Any] = []  # the context-reading globals met
        self._budget = 0

    def of(self, fragment: Fragment, context: jinja2.runtime.Context, values: Sequence[Any]
           ) -> tuple[Key, tuple[object, ...]]:
        """The key of `fragment` rendered with `values` in `context`; `_Unkeyable` if there is none."""
        self._refs, self._reads, self._budget = [], [], _MAX_KEY_PARTS
        env = fragment.template.environment
        parts: list[Hashable] = [fragment.uid]
        for value, chains in zip(values, fragment.chains):
            parts.append(self._named(env, value, chains))
        refs = tuple(self._refs)
        try:
            for read in dict.fromkeys(self._reads):
                if not fragment.stored.isdisjoint(read.names):
                    raise _Unkeyable  # the body assigns a name the global reads: not the context's
                parts.extend(read.key(context, ref) for ref in refs)
        except (LookupError, AttributeError, TypeError, ValueError) as e:
            raise _Unkeyable from e  # the render itself will say what is wrong, if it reads it
        return tuple(parts), refs

    def _named(self, env: jinja2.Environment, value: Any, chains: Any) -> Hashable:
        """A name read only as `name.a.b`: the key of those values (else of the whole value).
        Remembered per object and chains for the render when the object cannot change (not a
        `namespace()`): `vars` is read alike by every item."""
        kind = type(value)
        if chains is None or kind in self._rules.identity_types:
            return self.key(value)
        if kind not in self._rules.value_types and kind not in _IMMUTABLE:
            return self._chains(env, value, chains)
        slot = (id(value), chains)
        hit = self._chain_memo.get(slot)
        if hit is not None and hit[0] is value:
            self._refs.extend(hit[2])
            self._reads.extend(hit[3])
            return hit[1]
        refs, reads = len(self._refs), len(self._reads)
        key = self._chains(env, value, chains)
        self._chain_memo[slot] = (value, key, tuple(self._refs[refs:]), tuple(self._reads[reads:]))
        return key

    def _chains(self, env: jinja2.Environment, value: Any, chains: Any) -> Hashable:
        try:
            read = [_follow(env, value, chain) for chain in chains]
        except (jinja2.TemplateError, LookupError, AttributeError, TypeError, ValueError):
            return self.key(value)
        return ("chains", *(self.key(v) for v in read))

    def key(self, value: Any) -> Hashable:
        kind = type(value)
        if kind in _SCALARS:
            return value
        self._budget -= 1
        if self._budget < 0:
            raise _Unkeyable
        if kind is bool or kind is float:
            return (kind.__name__, repr(value))
        if kind in self._rules.text_types:
            return (kind, str(value))
        if kind in self._rules.identity_types:
            self._refs.append(value)
            return (kind, id(value))
        if isinstance(value, jinja2.Undefined):
            return (kind,)  # all alike but for the error message, and an error is not cached
        if callable(value):
            return self._function(value)
        return self._remembered(value, kind)

    def _function(self, value: Any) -> Hashable:
        name = self._rules.globals.get(id(value))
        if name is not None:
            return ("global", name)
        read = self._rules.context_reads.get(id(value))
        if read is None:
            raise _Unkeyable
        self._reads.append(read)
        return ("context", id(value))

    def _remembered(self, value: Any, kind: type) -> Hashable:
        hit = self._memo.get(id(value))
        if hit is not None and hit[0] is value:
            self._refs.extend(hit[2])
            self._reads.extend(hit[3])
            return hit[1]
        refs, reads = len(self._refs), len(self._reads)
        key = self._compound(value, kind)
        self._memo[id(value)] = (value, key, tuple(self._refs[refs:]), tuple(self._reads[reads:]))
        return key

    def _compound(self, value: Any, kind: type) -> Hashable:
        fields = self._rules.value_types.get(kind)
        if fields is not None:
            return (kind, *(self.key(getattr(value, f)) for f in fields))
        if kind is tuple or kind is list:
            return (kind.__name__, *(self.key(v) for v in value))
        if kind is dict or kind is MappingProxyType:
            return (kind.__name__, *((self.key(k), self.key(v)) for k, v in value.items()))
        raise _Unkeyable


def _follow(env: jinja2.Environment, value: Any, chain: Any) -> Any:
    """`value.a[0].b` read as the compiled template reads it (the sandbox's getattr and getitem)."""
    for is_attribute, step in chain:
        value = env.getattr(value, step) if is_attribute else env.getitem(value, step)
    return value
