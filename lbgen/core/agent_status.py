"""The value an agent publishes under `{prefix}/agents/{node}` (registry contract v1, issue 15).

The agent writes it on the lease that holds its endpoints, so a dead agent's presence leaves the
registry with its endpoints, within the TTL. It makes every agent visible, including one whose host
runs no container or whose Docker daemon is unreachable: `lbgen status` reads it to list agents
and their problems. Decoding validates every field (unknown fields are ignored, for forward
compatibility), like every other registry value.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from msgspec.structs import asdict

from lbgen.core.bounded import quote
from lbgen.core.lb_node_status import MAX_ERROR, load_node_value
from lbgen.core.schema import check_int, check_text, check_time
from lbgen.errors import InvalidValue

MAX_COUNT = 1_000_000
MAX_INTERVAL = 86_400.0
STALE_SLACK = 30.0  # seconds beyond two resync intervals: jitter, a slow resync, clock skew


class AgentStatus(msgspec.Struct, frozen=True):
    """What one agent reports about itself; times are the agent host's wall clock (epoch seconds)."""

    node: str
    version: str = ""
    docker_reachable: bool = False
    docker_since: float | None = None  # when `docker_reachable` last changed (or the agent started)
    containers: int = 0  # running containers seen on the host
    endpoints: int = 0  # endpoints the agent has registered
    error: str = ""  # the last error, whatever its kind; kept after recovery, with `error_at`
    error_at: float | None = None
    resync_at: float | None = None  # the last complete resync: containers re-listed, own keys re-read
    resync_interval: float = 60.0
    updated_at: float | None = None


def encode_agent_status(status: AgentStatus) -> bytes:
    """The JSON value to publish (compact, keys sorted; the error cut to `MAX_ERROR` characters)."""
    value = asdict(status) | {"error": status.error[:MAX_ERROR]}
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def decode_agent_status(node: str, raw: bytes | str) -> AgentStatus:
    """Validate the value stored under `{prefix}/agents/{node}`; `node` comes from the key."""
    value = load_node_value(node, raw)
    reachable = value.get("docker_reachable")
    if not isinstance(reachable, bool):
        raise InvalidValue(f"docker_reachable {quote(reachable)}: expected true or false")
    return AgentStatus(
        node=node,
        version=value.get("version", ""),
        docker_reachable=reachable,
        docker_since=check_time("docker_since", value.get("docker_since")),
        containers=check_int("containers", value.get("containers", 0), 0, MAX_COUNT),
        endpoints=check_int("endpoints", value.get("endpoints", 0), 0, MAX_COUNT),
        error=check_text("error", value.get("error", ""), MAX_ERROR),
        error_at=check_time("error_at", value.get("error_at")),
        resync_at=check_time("resync_at", value.get("resync_at")),
        resync_interval=_interval(value.get("resync_interval", 60.0)),
        updated_at=check_time("updated_at", value.get("updated_at")),
    )


def _interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_INTERVAL:
        raise InvalidValue(f"resync_interval {quote(value)}: expected seconds from 0 to {MAX_INTERVAL:g}")
    return float(value)


def stale_after(status: AgentStatus) -> float:
    """How old the last resync may be before it counts as stale: two intervals plus `STALE_SLACK`."""
    return 2 * status.resync_interval + STALE_SLACK


def agent_problems(status: AgentStatus, now: float | None) -> list[str]:
    """What is wrong with one agent at wall time `now`: Docker unreachable, or a stale resync (only
    judged when `now` is known)."""
    problems = []
    if not status.docker_reachable:
        then = status.docker_since
        since = "" if now is None or then is None else f" for {_seconds(now - then)}"
        problems.append(f"agent {status.node}: Docker unreachable{since}: {status.error or 'no error reported'}")
    last = status.resync_at
    if now is not None and last is not None and now - last > stale_after(status):
        problems.append(f"agent {status.node}: last resync {_seconds(now - last)} ago "
                        f"(every {status.resync_interval:g}s): its view of the host is stale")
    return problems


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.0f}s"
