"""Can a HAProxy config change go through the Runtime API instead of a reload? (issue 7)

`plan_runtime(old, new)` compares two rendered haproxy.cfg texts. When they are identical except
for the address, port, weight or `disabled` flag of `server` lines inside `backend` sections (the
fixed slots of templates/haproxy.cfg.j2), it returns the stats-socket commands that bring the
running HAProxy from `old` to `new`, and the state every server of each touched backend must
then show. Anything else — a section or server added or removed (slots ran out), any other line
changed, a server line it cannot read, a host name instead of an IP literal (`set server addr`
takes addresses only) — returns None: the caller reloads.

`parse_servers_state` and `mismatches` read back `show servers state` and compare it with the
expectation: a mismatch also sends the caller to the reload path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping

# `show servers state` srv_admin_state bits (HAProxy include/haproxy/server-t.h): forced, inherited,
# resolution and host-name maintenance; forced and inherited drain. CMAINT (0x04, `disabled` in the
# config) stays set after `set server state ready`, so it does not count.
_ADMIN_MAINT = 0x01 | 0x02 | 0x20 | 0x40
_ADMIN_DRAIN = 0x08 | 0x10


@dataclass(frozen=True)
class ServerState:
    """What lbgen decides about one server: where it points, its weight, whether it takes traffic."""

    address: str
    port: int
    weight: int
    enabled: bool


@dataclass(frozen=True)
class RuntimePlan:
    """Commands in order, and the expected state of every server of every backend they touch."""

    commands: tuple[str, ...]
    expected: Mapping[str, Mapping[str, ServerState]]


@dataclass(frozen=True)
class _ServerLine:
    backend: str
    name: str
    options: tuple[str, ...]  # everything but address, weight and `disabled`: must not change
    state: ServerState


class _Unreadable(ValueError):
    """A server line this module does not understand: the change takes the reload path."""


def plan_runtime(old: str, new: str) -> RuntimePlan | None:
    """The runtime commands turning `old` into `new`, or None when only a reload can."""
    try:
        old_skeleton, old_servers = _split(old)
        new_skeleton, new_servers = _split(new)
    except _Unreadable:
        return None
    if old_skeleton != new_skeleton:
        return None
    changed = [(a, b) for a, b in zip(old_servers, new_servers) if a.state != b.state]
    touched = {b.backend for _, b in changed}
    expected: dict[str, dict[str, ServerState]] = {}
    for server in new_servers:
        if server.backend in touched:
            expected.setdefault(server.backend, {})[server.name] = server.state
    return RuntimePlan(_ordered_commands(changed), expected)


def _split(text: str) -> tuple[list[object], list[_ServerLine]]:
    """The config with each backend server line reduced to what must stay equal, and those lines."""
    skeleton: list[object] = []
    servers: list[_ServerLine] = []
    section: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if line[:1] not in ("", " ", "\t", "#"):
            section = words
        if words[:1] == ["server"] and section[:1] == ["backend"]:
            server = _parse_server(section, words)
            servers.append(server)
            skeleton.append((server.backend, server.name, server.options))
        else:
            skeleton.append(line)
    return skeleton, servers


def _parse_server(section: list[str], words: list[str]) -> _ServerLine:
    """`server <name> <addr>:<port> [disabled] [weight <w>] [other options]`."""
    if len(section) != 2 or len(words) < 3 or any(c in "\"'\\" for c in " ".join(words)):
        raise _Unreadable(" ".join(words))
    address, port = _address_port(words[2])
    options = list(words[3:])
    enabled = "disabled" not in options
    options = [o for o in options if o != "disabled"]
    weight = 1
    if "weight" in options:
        at = options.index("weight")
        weight = _number(options[at + 1 : at + 2], 0, 256)
        del options[at : at + 2]
    return _ServerLine(section[1], words[1], tuple(options), ServerState(address, port, weight, enabled))


def _address_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError as e:
        raise _Unreadable(text) from e
    return address, _number([port], 1, 65535)


def _number(words: list[str], low: int, high: int) -> int:
    if len(words) != 1 or not words[0].isdigit() or not low <= int(words[0]) <= high:
        raise _Unreadable(" ".join(words))
    return int(words[0])


def _ordered_commands(changed: list[tuple[_ServerLine, _ServerLine]]) -> tuple[str, ...]:
    """Servers coming up first, then the ones changing in service, then the ones leaving (capacity
    never dips), then idle slots. A leaving server is drained, then put in maintenance: neither
    cuts established connections, which finish on their own (HAProxy `set server ... state`)."""
    arriving = [_arrive(a, b) for a, b in changed if b.state.enabled and not a.state.enabled]
    moving = [_move(a, b) for a, b in changed if b.state.enabled and a.state.enabled]
    leaving = [_leave(a, b) for a, b in changed if a.state.enabled and not b.state.enabled]
    idle = [_move(a, b) for a, b in changed if not (a.state.enabled or b.state.enabled)]
    return tuple(command for group in (arriving, moving, leaving, idle) for block in group for command in block)


def _arrive(old: _ServerLine, new: _ServerLine) -> list[str]:
    return [*_move(old, new), f"set server {_ref(new)} state ready"]


def _leave(old: _ServerLine, new: _ServerLine) -> list[str]:
    return [f"set server {_ref(new)} state drain", f"set server {_ref(new)} state maint", *_move(old, new)]


def _move(old: _ServerLine, new: _ServerLine) -> list[str]:
    commands = []
    if (old.state.address, old.state.port) != (new.state.address, new.state.port):
        commands.append(f"set server {_ref(new)} addr {new.state.address} port {new.state.port}")
    if old.state.weight != new.state.weight:
        commands.append(f"set weight {_ref(new)} {new.state.weight}")
    return commands


def _ref(server: _ServerLine) -> str:
    return f"{server.backend}/{server.name}"


# --- reading the state back -----------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedServer:
    """One row of `show servers state`: address, port, user weight, admin state bits."""

    address: str
    port: int
    weight: int
    admin: int

    def matches(self, expected: ServerState) -> bool:
        if self.admin & _ADMIN_MAINT:
            enabled: bool | None = False
        else:
            enabled = None if self.admin & _ADMIN_DRAIN else True  # draining: neither
        return (self.address, self.port, self.weight, enabled) == (
            expected.address, expected.port, expected.weight, expected.enabled)


def parse_servers_state(text: str) -> dict[str, ObservedServer]:
    """Server name → state from `show servers state <backend>` (format version 1; fields by the
    header's names, so added columns do not matter). Raises ValueError on anything else."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise ValueError(f"not a `show servers state` answer: {text[:200]!r}")
    names = lines[1][2:].split()
    try:
        column = {name: names.index(name) for name in
                  ("srv_name", "srv_addr", "srv_port", "srv_uweight", "srv_admin_state")}
        rows = [line.split() for line in lines[2:]]
        return {row[column["srv_name"]]: ObservedServer(
            str(ipaddress.ip_address(row[column["srv_addr"]])), int(row[column["srv_port"]]),
            int(row[column["srv_uweight"]]), int(row[column["srv_admin_state"]])) for row in rows}
    except (ValueError, IndexError) as e:
        raise ValueError(f"unreadable `show servers state` answer: {e}") from e


def mismatches(backend: str, expected: Mapping[str, ServerState],
               observed: Mapping[str, ObservedServer]) -> list[str]:
    """One line per server whose observed state differs from the expected one (or is missing)."""
    problems = [f"{backend}/{name}: expected {want}, observed {observed.get(name)}"
                for name, want in expected.items()
                if name not in observed or not observed[name].matches(want)]
    extra: Iterable[str] = sorted(set(observed) - set(expected))
    return problems + [f"{backend}/{name}: not in the rendered config" for name in extra]
