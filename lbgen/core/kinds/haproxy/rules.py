"""HAProxy's routing rules from the generic layout: `use_backend` lines and `default_backend`.

nginx matches a request by server block (exact host, then wildcard, then default) and longest
path; HAProxy evaluates `use_backend` lines in order, so the same precedence is written out here
as an ordered list of conditions built only from validated host names and paths.
"""

from __future__ import annotations

import functools

import msgspec

from lbgen.core.addresses import is_hostname
from lbgen.core.layout import Listener, UnsafeValue, Verbatim, VirtualHost, memo
from lbgen.core.schema import PATH_RE


class HaproxyRule(msgspec.Struct, frozen=True):
    """One `use_backend <backend> if <condition>` line; the condition is built from validated values."""

    backend: str
    condition: Verbatim


def haproxy_rules(listener: Listener) -> tuple[HaproxyRule, ...]:
    """`use_backend` rules in match order: exact hosts, wildcard hosts (longest first), any host;
    within each, longest path first. A host-less `/` route is left to `default_backend`.
    Each server's rules are remembered while it is the same object (issue 13: one port can hold
    10,000 of them, and one change makes a new listener): only the merge is redone."""
    ranked = [item for vhost in listener.hosts for item in _RULES.get(vhost, None, functools.partial(_ranked, vhost))]
    return tuple(rule for _, rule in sorted(ranked, key=lambda item: item[0]))


_RULES = memo("haproxy_rules")


def _ranked(vhost: VirtualHost) -> list[tuple[tuple[int, int, int], HaproxyRule]]:
    unsafe = [n for n in vhost.names if not is_hostname(n, allow_wildcard=True)]
    if unsafe:
        raise UnsafeValue(f"refusing host name {unsafe[0]!r:.100} in an HAProxy rule")
    exact = [n for n in vhost.names if not n.startswith("*.")]
    wild = sorted((n[1:] for n in vhost.names if n.startswith("*.")), key=lambda n: (-len(n), n))
    host_tests: list[tuple[tuple[int, int], str]] = []
    for names in _line_chunks(exact):
        host_tests.append(((0, 0), f"{{ var(txn.host) -m str {' '.join(names)} }}"))
    for names in _line_chunks(wild):
        host_tests.append(((1, -len(names[0])), f"{{ var(txn.host) -m end {' '.join(names)} }}"))
    if not vhost.names:
        host_tests.append(((2, 0), ""))
    ranked = []
    for rank, host_test in host_tests:
        for route in vhost.routes:
            if host_test or route.path != "/":
                rule = HaproxyRule(route.service.name, _condition(host_test, route.path))
                ranked.append(((*rank, -len(route.path)), rule))
    return ranked


# HAProxy refuses a line of more than 64 words or 2,048 characters, and a path rule repeats the
# host test twice: 20 names and 480 characters of names per rule keep any line well inside both.
_NAMES_PER_RULE = 20
_NAME_CHARS_PER_RULE = 480


def _line_chunks(names: list[str]) -> list[list[str]]:
    """`names` in order, cut into runs that fit one `use_backend` line (one name always fits)."""
    chunks: list[list[str]] = []
    size = 0
    for name in names:
        if not chunks or len(chunks[-1]) == _NAMES_PER_RULE or size + len(name) > _NAME_CHARS_PER_RULE:
            chunks.append([])
            size = 0
        chunks[-1].append(name)
        size += len(name) + 1
    return chunks


def _condition(host_test: str, path: str) -> Verbatim:
    if not PATH_RE.fullmatch(path):
        raise UnsafeValue(f"refusing path {path!r:.100} in an HAProxy rule")
    if path == "/":
        return Verbatim(host_test)
    prefix = f"{host_test} " if host_test else ""
    return Verbatim(f"{prefix}{{ path {path} }} || {prefix}{{ path_beg {path}/ }}")


def default_backend(listener: Listener) -> str | None:
    """The service behind `any host` + `/` on this port, if one claims it."""
    for vhost in listener.hosts:
        if not vhost.names:
            return next((r.service.name for r in vhost.routes if r.path == "/"), None)
    return None
