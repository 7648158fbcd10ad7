"""Can a HAProxy config change go through the Runtime API instead of a reload? (issue 7)

`plan_runtime(old, new)` compares two rendered haproxy.cfg texts. When they are identical except
for the address, port, weight or `disabled` flag of `server` lines inside `backend` sections (the
fixed slots of templates/haproxy.cfg.j2), it returns the stats-socket commands that bring the
running HAProxy from `old` to `new`, and the state every server of each touched backend must
then show. Anything else — a section or server added or removed (slots ran out), any other line
changed, a server line it cannot read, a host name instead of an IP literal (`set server addr`
takes addresses only) — returns None: the caller reloads.

Why from the two texts and not from the slot values `slots.py` built: the template is the user's,
so the rendered text, not lbgen's values, is the complete statement of what a reload would load.
A template may add any option to a server line or lay servers out its own way; comparing the
texts sees every such difference (and sends it to a reload), where a plan built from values
would apply a change the text does not say, or miss one it does. The read-back verifies the
result either way. Only the differing lines are parsed, so this costs little at 160,000 servers.

`parse_servers_state` and `mismatches` read back `show servers state` and compare it with the
expectation: a mismatch also sends the caller to the reload path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

import msgspec

# `show servers state` srv_admin_state bits (HAProxy include/haproxy/server-t.h): forced, inherited,
# resolution and host-name maintenance; forced and inherited drain. CMAINT (0x04, `disabled` in the
# config) stays set after `set server state ready`, so it does not count.
_ADMIN_MAINT = 0x01 | 0x02 | 0x20 | 0x40
_ADMIN_DRAIN = 0x08 | 0x10
_BODY = ("", " ", "\t", "#")  # first characters of lines inside a section (or blank, or comments)


class ServerState(msgspec.Struct, frozen=True):
    """What lbgen decides about one server: where it points, its weight, whether it takes traffic."""

    address: str
    port: int
    weight: int
    enabled: bool


class RuntimePlan(msgspec.Struct, frozen=True):
    """Commands in order, and the expected state of every server of every backend they touch.
    `needs_check`: `haproxy -c` runs on the file first (the slot lines are parsed, not generated
    by lbgen alone: a custom template may put anything on them)."""

    commands: tuple[str, ...]
    expected: Mapping[str, Mapping[str, ServerState]]
    needs_check: bool = True

    def __len__(self) -> int:
        """How many commands (`lbgen.core.kinds.RuntimeChange`: the applier logs it)."""
        return len(self.commands)


class _ServerLine(msgspec.Struct, frozen=True):
    backend: str
    name: str
    options: tuple[str, ...]  # everything but address, weight and `disabled`: must not change
    state: ServerState


class _Unreadable(ValueError):
    """A server line this module does not understand: the change takes the reload path."""


def plan_runtime(old: str, new: str) -> RuntimePlan | None:
    """The runtime commands turning `old` into `new`, or None when only a reload can.

    Only the lines that differ are parsed (a one-endpoint change in an 8 MB config reads one
    backend, not 160,000 server lines); then every server of each touched backend, to know the
    state the whole backend must show afterwards.
    """
    old_lines, new_lines = old.splitlines(), new.splitlines()
    if len(old_lines) != len(new_lines):
        return None
    differing = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    try:
        starts = _section_starts(new_lines, differing)
        changed = [_changed_server(old_lines, new_lines, i, start) for i, start in zip(differing, starts, strict=True)]
        backends = {after.backend: start for (_, after), start in zip(changed, starts, strict=True)}
        expected = {backend: _backend_state(new_lines, start) for backend, start in backends.items()}
    except _Unreadable:
        return None
    return RuntimePlan(_ordered_commands(changed), expected)


def _changed_server(old_lines: list[str], new_lines: list[str], i: int, start: int) -> tuple[_ServerLine, _ServerLine]:
    """Both versions of server line `i` (its section's header at `start`); `_Unreadable` unless both
    are server lines of the same backend differing only in address, port, weight or `disabled`."""
    if start == i or start < 0:
        raise _Unreadable(new_lines[i])
    before, after = _parse_server(old_lines, start, i), _parse_server(new_lines, start, i)
    if (before.backend, before.name, before.options) != (after.backend, after.name, after.options):
        raise _Unreadable(new_lines[i])
    return before, after


def _section_starts(lines: list[str], indexes: list[int]) -> list[int]:
    """For each of the ascending `indexes`, the index of the header line (`backend web`,
    `global`...) of its section (-1: before any). A header line is its own start. Each search
    stops at the previous index: no header in between means the same section."""
    starts: list[int] = []
    last_i = last_start = -1
    for i in indexes:
        j = i
        while j > last_i and lines[j][:1] in _BODY:
            j -= 1
        last_i, last_start = i, (last_start if j == last_i else j)
        starts.append(last_start)
    return starts


def _backend_state(lines: list[str], start: int) -> dict[str, ServerState]:
    """Every server of the backend whose header is at `start`, as the config sets it."""
    state = {}
    for i in range(start + 1, len(lines)):
        if lines[i][:1] not in _BODY:
            break
        if lines[i].split()[:1] == ["server"]:
            server = _parse_server(lines, start, i)
            state[server.name] = server.state
    return state


def _parse_server(lines: list[str], start: int, i: int) -> _ServerLine:
    """Line `i`, in the section headed at `start`: `server <name> <addr>:<port> [disabled] [weight <w>] [...]`."""
    section, words = lines[start].split(), lines[i].split()
    if section[:1] != ["backend"] or words[:1] != ["server"]:
        raise _Unreadable(lines[i])
    if len(section) != 2 or len(words) < 3 or any(c in "\"'\\" for c in lines[i]):
        raise _Unreadable(lines[i])
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


class ObservedServer(msgspec.Struct, frozen=True):
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
