"""Quarantine: find the services an LB's checker refuses, and hold only those back (issue 10 part 3).

A value the registry contract accepts can still be refused by the LB's own checker (nginx resolves
upstream host names at `nginx -t`; HAProxy refuses a line of more than 64 words). Without this,
one such value freezes the whole LB: every later pass fails its check. With it, the watcher asks
the checker about *mixed* catalogs — the new catalog with some services held at their last applied
state — and searches for the smallest set of services whose release makes the check fail.

Pure: the search only sees a `Probe` ("the checker's reason when the config with these services
held back fails, else None"); the caller runs the real checker on a staged file for each probe.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Mapping

import msgspec

from lbgen.core.model import Catalog, Service
from lbgen.errors import telling_line

Probe = Callable[[frozenset[str]], "str | None"]

MAX_REASON = 300
_NGINX_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#\d+: ")
_HAPROXY_PREFIX = re.compile(r"^(\[[A-Z]+\])\s+\(\d+\) : ")
# A staged candidate (`.nginx.conf.k2j4_x9q.lbgen`) or nginx shadow main config, named as the file it
# stands for: a reason then reads the same at every pass (and the LB status is not rewritten).
_STAGED = re.compile(r"/\.([^/\s\"']+?)\.[A-Za-z0-9_]{8}\.(?:lbgen|shadow)\b")


class Culprits(msgspec.Struct, frozen=True):
    """The outcome of a search: each held service with the checker's reason, and the cost.
    `exhausted`: the probe budget ran out; the services still suspected are held as well."""

    held: Mapping[str, str] = {}
    probes: int = 0
    exhausted: bool = False


def changed_services(applied: Catalog | None, new: Catalog) -> frozenset[str]:
    """Services added, removed or changed since `applied` (every service when nothing was applied)."""
    before = {s.name: s for s in applied.services} if applied is not None else {}
    after = {s.name: s for s in new.services}
    return frozenset(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def hold_services(new: Catalog, applied: Catalog | None, held: Iterable[str]) -> Catalog:
    """`new` with every service in `held` at its state in `applied`: a service that was not in
    `applied` (or nothing was applied yet) is left out; the revision stays `new`'s."""
    held = frozenset(held)
    if not held:
        return new
    services: dict[str, Service] = {s.name: s for s in new.services if s.name not in held}
    for service in applied.services if applied is not None else ():
        if service.name in held:
            services[service.name] = service
    return Catalog(new.revision, tuple(services[name] for name in sorted(services)))


def probe_budget(candidates: int, culprits: int = 3) -> int:
    """Probes allowed for one search: exact for up to `culprits` bad services among `candidates`
    (each costs ceil(log2 n) + 1 probes, plus one probe first), so at 10,000 changed services 46."""
    return 1 + culprits * (math.ceil(math.log2(max(candidates, 1))) + 1)


def find_culprits(changed: frozenset[str], probe: Probe, failure: str,
                  suspects: frozenset[str] = frozenset(), budget: int | None = None) -> Culprits | None:
    """The services to hold back so that the config passes, each with the checker's reason.

    `failure` is the reason the whole new config was refused. `suspects` (the services held at the
    previous pass) are tried first: a service still bad costs one probe, not a bisection. Returns
    None when holding every changed service back still fails: the fault is tied to no service
    (a template or global var error, an LB-wide problem) and the whole last good config stays.
    Assumes a bad service fails the check by itself (the case for values nginx or HAProxy refuse);
    each culprit costs ceil(log2 n) + 1 probes, and the search stops at `budget` (see
    `probe_budget`), holding every service still suspected then.
    """
    search = _Search(probe, budget if budget is not None else probe_budget(len(changed)))
    try:
        return search.run(changed, suspects & changed, failure)
    except _Exhausted:
        return search.give_up()


class _Exhausted(Exception):
    """The probe budget ran out."""


class _Search:
    """One search: the probe cache and count, the culprits found so far, the last passing set."""

    def __init__(self, probe: Probe, budget: int) -> None:
        self._probe = probe
        self._budget = budget
        self._cache: dict[frozenset[str], str | None] = {}
        self._found: dict[str, str] = {}
        self._safe: frozenset[str] = frozenset()
        self._last_failure = ""

    def run(self, changed: frozenset[str], suspects: frozenset[str], failure: str) -> Culprits | None:
        self._last_failure = failure
        if suspects and self.check(suspects) is None:
            changed = suspects
        elif self.check(changed) is not None:
            return None
        base, reason = frozenset[str](), failure  # type: frozenset[str], str | None
        while reason is not None:
            name, reason_for = self._find_one(changed - base, base, reason)
            self._found[name] = reason_for
            base = frozenset(self._found)
            reason = self.check(base)
        return Culprits(dict(sorted(self._found.items())), len(self._cache))

    def _find_one(self, candidates: frozenset[str], base: frozenset[str], failure: str) -> tuple[str, str]:
        """A service in `candidates` that makes the check fail by itself: holding `base | candidates`
        passes and holding `base` fails with `failure` (the invariant, kept at every halving)."""
        while len(candidates) > 1:
            ordered = sorted(candidates)
            first, second = frozenset(ordered[: len(ordered) // 2]), frozenset(ordered[len(ordered) // 2:])
            reason = self.check(base | second)  # release `first` only
            if reason is None:
                candidates = second
            else:
                base, candidates, failure = base | second, first, reason
        return next(iter(candidates)), failure

    def check(self, held: frozenset[str]) -> str | None:
        if held not in self._cache:
            if len(self._cache) >= self._budget:
                raise _Exhausted()
            self._cache[held] = self._probe(held)
        reason = self._cache[held]
        if reason is None:
            self._safe = held
        else:
            self._last_failure = reason
        return reason

    def give_up(self) -> Culprits:
        """Hold what passed last: the culprits found, and every service still suspected."""
        held = dict(self._found)
        for name in sorted(self._safe - held.keys()):
            held[name] = f"suspected (probe budget of {self._budget} used up): {self._last_failure}"
        return Culprits(dict(sorted(held.items())), len(self._cache), exhausted=True)


def checker_reason(output: str, error: str) -> str:
    """One line saying why the checker refused a config: the line `telling_line` picks (nginx
    `[emerg]`, HAProxy `[ALERT]`) without its timestamp and pid, else the error's first line; a
    staged file is named `<dest> (candidate)` as `lbgen render` does; at most `MAX_REASON` characters."""
    if output.strip():
        line = telling_line(output, limit=len(output))
    else:
        line = error.strip().splitlines()[0] if error.strip() else "refused by the checker"
    line = _HAPROXY_PREFIX.sub(r"\1 ", _NGINX_PREFIX.sub(r"\1 ", line))
    return _cut(_STAGED.sub(r"/\1 (candidate)", line))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
