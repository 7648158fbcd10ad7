"""The text each fragment rendered, per key, kept per target from one render to the next (issue 13).

A `FragmentCache` keeps what its last successful render used (hits and new texts) and drops the
rest once the rest outnumbers it, so memory stays within about two rendered configs (a sweep walks
every entry: 4-6 ms at 20,000 of them, a large share of a one-endpoint change). A render works
through a `FragmentSession`: it records the entries it hit and the texts it rendered, and
`commit()` stores them. A render that fails commits nothing. The bounded renderer keeps the cache
in its render worker (`lbgen.adapters.render_worker`), where the template renders.

Entries are never rewritten: a key stands for one text for good. An identity-keyed value (a
`ServiceView`) is held by every entry whose key has its id, so no other object can take that id
while the entry lives. Committing updates the one dict in place (a key tuple is hashed again on
each insert: rebuilding 10,000 entries cost more than the render saved).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Sequence
from types import MappingProxyType
from typing import Any

import jinja2

from lbgen.core.fragments import Fragment, FragmentText, Rules, Session

__all__ = ["FragmentCache", "FragmentSession"]

_SLACK = 64  # unused entries always kept: a small cache is swept only when it has grown a little
_MAX_KEY_PARTS = 20_000  # a larger value (all of `services`) renders uncached: keying it costs more

Key = tuple[Hashable, ...]
_SCALARS = (str, int, type(None))
_IMMUTABLE = (dict, MappingProxyType, tuple, list)  # in the sandbox: `vars`, `spec`, a `{...}` literal


class _Entry:
    __slots__ = ("text", "refs", "generation")

    def __init__(self, text: FragmentText, refs: tuple[object, ...], generation: int) -> None:
        self.text, self.refs, self.generation = text, refs, generation


class FragmentCache:
    """One target's fragment texts (per template: keys start with the fragment's uid).

    Two renders of one target may overlap (a lane's quarantine probes render from its own
    thread): every entry stays valid whoever stores it, the dict is only changed by atomic steps,
    and a commit sweeps only when no other commit came since its session began."""

    def __init__(self) -> None:
        self.entries: dict[Key, _Entry] = {}
        self.generation = 0  # of the last commit

    def session(self, rules: Rules) -> FragmentSession:
        return FragmentSession(self, rules)

    def __len__(self) -> int:
        return len(self.entries)


class _Unkeyable(Exception):
    """A value the key cannot stand for: the body renders uncached."""


class FragmentSession(Session):
    """One render's use of a `FragmentCache`: the `__lbgen_fragments` of its context."""

    def __init__(self, cache: FragmentCache, rules: Rules) -> None:
        self._cache, self._generation, self._keys = cache, cache.generation, _Keys(rules)
        self.hits: list[_Entry] = []
        self.new: dict[Key, _Entry] = {}

    def text(self, fragment: Fragment, context: jinja2.runtime.Context, values: Sequence[Any]
             ) -> FragmentText | None:
        """The body's text for these values: remembered for an equal key, else rendered; None
        when they have no key (the body then renders in place, as written)."""
        try:
            key, refs = self._keys.of(fragment, context, values)
        except _Unkeyable:
            return None
        entry = self._cache.entries.get(key) or self.new.get(key)
        if entry is not None:
            self.hits.append(entry)
            return entry.text
        text = fragment.render(context, values)
        self.new[key] = _Entry(text, refs, 0)
        return text

    def loop(self, fragment: Fragment, context: jinja2.runtime.Context, items: Sequence[Any],
             values: Sequence[Any]) -> FragmentText | None:
        """A whole loop's text: each item's body by its key, joined (the other values keyed once);
        None as soon as an item has no key (the loop then runs as written)."""
        slot, full, texts = fragment.target, list(values), []
        assert slot is not None  # the caller checked
        full.insert(slot, None)
        entries, new, keys = self._cache.entries, self.new, self._keys
        try:
            outer = keys.outer(fragment, full, slot)
            for item in items:
                key, refs = keys.item(fragment, context, outer, slot, item)
                entry = entries.get(key) or new.get(key)
                if entry is None:
                    full[slot] = item
                    entry = new[key] = _Entry(fragment.render(context, full), refs, 0)
                else:
                    self.hits.append(entry)
                texts.append(entry.text)
        except _Unkeyable:
            return None
        return FragmentText("".join(texts))

    def commit(self) -> None:
        """Keep what this render used, and drop the rest (call after a successful render)."""
        self._store(self.hits, self.new)

    def _store(self, hits: list[_Entry], new: dict[Key, _Entry]) -> None:
        cache = self._cache
        sweep = cache.generation == self._generation  # else another render committed since this one began
        cache.generation += 1
        for entry in hits:
            entry.generation = cache.generation
        for key, entry in new.items():
            entry.generation = cache.generation
            cache.entries.setdefault(key, entry)
        if sweep and len(cache.entries) > 2 * (len(hits) + len(new)) + _SLACK:
            # `list` and `pop`: atomic, should another thread's render commit meanwhile
            for key, entry in list(cache.entries.items()):
                if entry.generation != cache.generation:
                    cache.entries.pop(key, None)


_Memo = tuple[object, Hashable, tuple[object, ...], tuple[Any, ...]]  # value, key, refs, context reads
_Outer = tuple[list[Hashable], tuple[object, ...], tuple[Any, ...], int]  # parts, refs, context reads, budget left
_NO_KEY = object()


class _Keys:
    """Keys of one render's values; containers remembered by identity for the render's length."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules
        self._memo: dict[Any, _Memo] = {}
        self._chain_memo: dict[Any, _Memo] = {}
        self._refs: list[object] = []
        self._reads: list[Any] = []  # the context-reading globals met
        self._budget = 0
        self._modes: dict[tuple[int, int], bool] = {}  # (fragment, name) → keyed by its chains

    def of(self, fragment: Fragment, context: jinja2.runtime.Context, values: Sequence[Any]
           ) -> tuple[Key, tuple[object, ...]]:
        """The key of `fragment` rendered with `values` in `context`; `_Unkeyable` if there is none."""
        return self.item(fragment, context, self.outer(fragment, values, None), None, None)

    def outer(self, fragment: Fragment, values: Sequence[Any], skip: int | None) -> _Outer:
        """The key parts of `values` but the one at `skip` (a loop's item: `item` adds it)."""
        self._refs, self._reads, self._budget = [], [], _MAX_KEY_PARTS
        env = fragment.template.environment
        parts: list[Hashable] = [fragment.uid]
        for slot, (value, chains) in enumerate(zip(values, fragment.chains)):
            parts.append(None if slot == skip else self._part(env, fragment.uid, slot, value, chains))
        return parts, tuple(self._refs), tuple(self._reads), self._budget

    def item(self, fragment: Fragment, context: jinja2.runtime.Context, outer: _Outer, skip: int | None,
             value: Any) -> tuple[Key, tuple[object, ...]]:
        """The whole key: `outer`'s parts with `value` at `skip`, then what the context reads say."""
        parts, refs, reads, self._budget = outer
        if skip is not None:
            self._refs, self._reads, parts = list(refs), list(reads), list(parts)
            env = fragment.template.environment
            parts[skip + 1] = self._part(env, fragment.uid, skip, value, fragment.chains[skip])
            refs, reads = tuple(self._refs), tuple(self._reads)
        if not reads:
            return tuple(parts), refs
        try:
            for read in dict.fromkeys(reads):
                if not fragment.stored.isdisjoint(read.names):
                    raise _Unkeyable  # the body assigns a name the global reads: not the context's
                parts.extend(read.key(context, ref) for ref in refs)
        except Exception as e:  # noqa: BLE001  # the render itself says what is wrong, if it reads it
            raise _Unkeyable from e
        return tuple(parts), refs

    def _part(self, env: jinja2.Environment, uid: int, slot: int, value: Any, chains: Any) -> Hashable:
        kind = type(value)
        if kind in self._rules.identity_types and not self._by_chains(env, uid, slot, value, chains):
            self._refs.append(value)  # the common cases first: a service, a plain value
            return (kind, id(value))
        if kind in _SCALARS:
            return value  # type: ignore[no-any-return]
        return self._named(env, value, chains)

    def _by_chains(self, env: jinja2.Environment, uid: int, slot: int, value: Any, chains: Any) -> bool:
        """Whether an identity-keyed value read only as `name.a.b` is keyed by those values: when
        they are plain values (the server blocks of one port read `listener.port`, not the
        listener, which changes with any of its hosts). Decided on its first value per render."""
        if chains is None:
            return False
        decided = self._modes.get((uid, slot))
        if decided is None:
            try:
                read = [_follow(env, value, chain)[1] for chain in chains]
            except Exception:  # noqa: BLE001  # keyed whole: the body raises on its own line
                read = [self]
            decided = self._modes[(uid, slot)] = all(type(v) in _SCALARS for v in read)
        return decided

    def _named(self, env: jinja2.Environment, value: Any, chains: Any) -> Hashable:
        """A name read only as `name.a.b`: the key of those values (else of the whole value).
        Remembered per object and chains for the render when the object cannot change (not a
        `namespace()`): `vars` is read alike by every item."""
        kind = type(value)
        if chains is None:
            return self.key(value)
        if kind not in self._rules.value_types and kind not in _IMMUTABLE:
            return self._chains(env, value, chains)
        return self._memoized(self._chain_memo, (id(value), chains), value, lambda: self._chains(env, value, chains))

    def _chains(self, env: jinja2.Environment, value: Any, chains: Any) -> Hashable:
        try:
            read = [_follow(env, value, chain) for chain in chains]
        except Exception:  # noqa: BLE001  # the body reads it and raises there, naming its own line
            return self.key(value)
        return ("chains", *(self._held(*pair) for pair in read))

    def _held(self, holder: Any, value: Any) -> Hashable:
        """A tuple field of an identity-keyed value (`listener.hosts`) is as fixed as its holder:
        keyed by identity too (and held), so an unchanged port's 100 hosts are one key part."""
        if type(value) is tuple and type(holder) in self._rules.identity_types:
            self._refs.append(value)
            return ("held", id(value))
        return self.key(value)

    def key(self, value: Any) -> Hashable:
        kind = type(value)
        if kind in _SCALARS:
            return value  # type: ignore[no-any-return]
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
        if kind is jinja2.StrictUndefined:
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
        return self._memoized(self._memo, id(value), value, lambda: self._compound(value, kind))

    def _memoized(self, memo: dict[Any, _Memo], slot: Any, value: Any, compute: Callable[[], Hashable]) -> Hashable:
        """`compute()`, remembered for `value` (held, so its id stays its own) for this render,
        with the refs and context reads it added; a value without a key is remembered too (the
        other items of the loop then give up at once)."""
        hit = memo.get(slot)
        if hit is not None and hit[0] is value:
            if hit[1] is _NO_KEY:
                raise _Unkeyable
            self._refs.extend(hit[2])
            self._reads.extend(hit[3])
            return hit[1]
        refs, reads = len(self._refs), len(self._reads)
        try:
            key = compute()
        except _Unkeyable:
            memo[slot] = (value, _NO_KEY, (), ())
            raise
        memo[slot] = (value, key, tuple(self._refs[refs:]), tuple(self._reads[reads:]))
        return key

    def _compound(self, value: Any, kind: type) -> Hashable:
        fields = self._rules.value_types.get(kind)
        if fields is not None:
            return (kind, *(self.key(getattr(value, f)) for f in fields))
        if kind is tuple or kind is list:
            return (kind.__name__, *(self.key(v) for v in value))
        if kind is dict or kind is MappingProxyType:
            return (kind.__name__, *((self.key(k), self.key(v)) for k, v in value.items()))
        if kind is frozenset and all(type(v) is str for v in value):
            return _digest(value)
        raise _Unkeyable


def _digest(names: frozenset[str]) -> Hashable:
    """A set of names (nginx's Lua-balanced upstreams: 10,000 of them) keyed by a digest of its
    sorted members, computed once per render: a key holding the set itself would compare it member
    by member at every lookup. SHA-256: two different sets never share a key in practice."""
    text = json.dumps(sorted(names)).encode()  # each name quoted: no two sets give one text
    return ("frozenset", len(names), hashlib.sha256(text).hexdigest())


def _follow(env: jinja2.Environment, value: Any, chain: Any) -> tuple[Any, Any]:
    """`value.a[0].b` read as the compiled template reads it (the sandbox's getattr and getitem),
    and the value its last step read from."""
    holder = None
    for is_attribute, step in chain:
        holder, value = value, env.getattr(value, step) if is_attribute else env.getitem(value, step)
    return holder, value
