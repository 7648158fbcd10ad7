"""HAProxy's Runtime API over the stats socket: apply a `RuntimePlan` and read the result back (issue 7).

The stats socket (`stats socket <path> level admin` in haproxy.cfg; the target's
`vars.stats_socket`) is served by the current worker. Each command goes on its own connection, so
each answer is checked on its own: `set weight` and `set server ... state` answer nothing on
success, `set server ... addr` answers "IP changed ..." or "no need to change ...". Every command
is absolute (idempotent), so a connection refused while a reload hands the socket over is retried,
but each command for at most `DOWN_AFTER` seconds: a socket left behind by a dead HAProxy fails
the runtime path at once (issue 10) instead of costing the whole timeout before the fallback.
Then `show servers state <backend>` for each touched backend must match the plan's expectation
exactly; anything else is an `ApplyError` and the applier falls back to a full validated reload,
which re-reads the same config from disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from lbgen.adapters.kinds.haproxy.control import DOWN_AFTER, cli_query
from lbgen.core.kinds import RuntimeChange
from lbgen.core.kinds.haproxy.runtime_plan import RuntimePlan, mismatches, parse_servers_state
from lbgen.core.settings import Target
from lbgen.errors import ApplyError
from lbgen.ports import Clock

log = logging.getLogger(__name__)

DEFAULT_STATS_SOCKET = "/run/haproxy/admin.sock"  # the template's default too
_ACCEPTED = ("IP changed", "no need to change")

Query = Callable[[Path, str, Clock, float], str]


class HaproxyRuntime:
    """`lbgen.ports.RuntimeApi` for one HAProxy; `query` is injectable so tests can falsify answers."""

    def __init__(self, target: Target, clock: Clock, query: Query = cli_query) -> None:
        self._target = target
        self._clock = clock
        self._query = query
        self.socket = Path(str(target.vars.get("stats_socket", DEFAULT_STATS_SOCKET)))

    def apply(self, plan: RuntimeChange) -> None:
        """Send every command of a `RuntimePlan` in order, then verify every touched backend;
        `ApplyError` on the first command HAProxy refuses, an unreachable socket, or a read-back
        that differs."""
        if not isinstance(plan, RuntimePlan):
            raise ApplyError(f"{self._target.name}: not a haproxy runtime plan: {type(plan).__name__}")
        if not self.socket.exists():  # no HAProxy running (yet): nothing to wait for
            raise ApplyError(f"{self._target.name}: no haproxy stats socket at {self.socket}")
        deadline = self._clock.now() + self._target.timeout
        for command in plan.commands:
            answer = self._ask(command, deadline).strip()
            if answer and not answer.startswith(_ACCEPTED):
                raise ApplyError(f"{self._target.name}: haproxy refused `{command}`: {answer.splitlines()[0]}")
        for backend, expected in plan.expected.items():
            answer = self._ask(f"show servers state {backend}", deadline)
            try:
                problems = mismatches(backend, expected, parse_servers_state(answer))
            except ValueError as e:
                raise ApplyError(f"{self._target.name}: reading back {backend}: {e}") from e
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise ApplyError(f"{self._target.name}: runtime state differs: {problems[0]}{more}")
        log.debug("%s: %d runtime command(s) applied and verified", self._target.name, len(plan.commands))

    def _ask(self, command: str, deadline: float) -> str:
        try:
            return self._query(self.socket, command, self._clock, min(deadline, self._clock.now() + DOWN_AFTER))
        except OSError as e:
            raise ApplyError(f"{self._target.name}: haproxy stats socket {self.socket}: {e}") from e
