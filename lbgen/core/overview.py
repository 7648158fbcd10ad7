"""What `lbgen status` shows, computed from one registry snapshot: services and their endpoints,
the Docker hosts (agents) that registered them, the LB nodes' published status, and the problems.

Each agent publishes its presence under `{prefix}/agents/{node}` on the lease of its endpoints
(`lbgen.core.agent_status`): an agent is listed when it reports itself or when endpoints name its
node (an older agent, or values written by hand); an unreachable Docker daemon or a stale resync is
a problem. An LB node is behind when `{prefix}/services/` changed after the revision it applied:
a put (a newer key), or a deletion, seen through key counts the caller read from the registry's
history (`lbgen.core.behind`).
"""

from __future__ import annotations

from typing import Any, Mapping

import msgspec
from msgspec.structs import replace

from lbgen.core.agent_status import AgentStatus, agent_problems, decode_agent_status
from lbgen.core.behind import CHANGED, COMPACTED, History, history_of
from lbgen.core.catalog import Rejected, catalog_from_snapshot
from lbgen.core.lb_node_status import LbStatus, decode_lb_status
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog
from lbgen.core.schema import endpoint_key, parse_key
from lbgen.errors import InvalidValue
from lbgen.core.values import Snapshot


class AgentView(msgspec.Struct, frozen=True):
    """A Docker host: its agent's presence (None when it does not report, or `invalid` says why its
    value was refused) and the endpoints that name its node."""

    node: str
    endpoints: int
    served: int
    leases: tuple[int, ...]
    status: AgentStatus | None = None
    invalid: str = ""


class LbView(msgspec.Struct, frozen=True):
    """An LB node's published status (None when the value is invalid: `invalid` says why)."""

    node: str
    status: LbStatus | None
    behind: bool = False
    behind_why: str = ""  # CHANGED, DELETED or COMPACTED (lbgen.core.behind)
    invalid: str = ""


class Overview(msgspec.Struct, frozen=True):
    prefix: str
    revision: int  # the registry's revision when read
    services_revision: int  # the last change to a key under {prefix}/services/ still there
    catalog: Catalog
    rejected: tuple[Rejected, ...]
    agents: tuple[AgentView, ...]
    lbs: tuple[LbView, ...]
    problems: tuple[str, ...]
    draining: frozenset[str] = frozenset()  # endpoint ids with a drain marker (`{prefix}/drain/{id}`)


def build_overview(prefix: str, snapshot: Snapshot, expect_lbs: bool = True,
                   served_health: frozenset[str] = DEFAULT_SERVED_HEALTH, now: float | None = None,
                   counts: Mapping[int, int | None] | None = None) -> Overview:
    """The overview of `snapshot` (every key under `prefix`). `expect_lbs`: no LB node reporting is
    a problem (not for a file registry, where watchers' status stays in their own memory). `now`
    (wall clock) judges whether an agent's last resync is stale; `counts` (revision → keys under
    `services/` then, None when compacted) reveal deletions after an LB node's applied revision."""
    catalog, rejected = catalog_from_snapshot(prefix, snapshot)
    refs = [(parse_key(prefix, kv.key), kv) for kv in snapshot.items]
    history = history_of(prefix, snapshot, counts)
    services_revision = history.last_put
    lbs = tuple(_lb_view(ref.node, kv.value, history) for ref, kv in refs if ref and ref.kind == "lb")
    leases = {kv.key: kv.lease for ref, kv in refs if ref and ref.kind == "endpoint"}
    presence = {ref.node: kv.value for ref, kv in refs if ref and ref.kind == "agent"}
    draining = frozenset(ref.endpoint_id for ref, _ in refs if ref and ref.kind == "drain")
    overview = Overview(prefix, snapshot.revision, services_revision, catalog, tuple(rejected),
                        _agents(prefix, catalog, leases, presence, served_health), lbs, (), draining)
    return replace(overview, problems=_problems(overview, expect_lbs, served_health, now))


def _lb_view(node: str, raw: bytes, history: History) -> LbView:
    try:
        status = decode_lb_status(node, raw)
    except InvalidValue as e:
        return LbView(node, None, invalid=str(e))
    why = history.behind(status.revision)
    return LbView(node, status, behind=bool(why), behind_why=why)


def _agents(prefix: str, catalog: Catalog, leases: dict[str, int], presence: dict[str, bytes],
            served_health: frozenset[str]) -> tuple[AgentView, ...]:
    found: dict[str, tuple[int, int, set[int]]] = {node: (0, 0, set()) for node in presence}
    for service in catalog.services:
        for e in service.all_endpoints:
            count, served, held = found.get(e.node, (0, 0, set()))
            lease = leases.get(endpoint_key(prefix, service.name, e.id), 0)
            found[e.node] = (count + 1, served + e.is_served(served_health), held | ({lease} - {0}))
    return tuple(_agent_view(AgentView(node, c, s, tuple(sorted(held))), presence.get(node))
                 for node, (c, s, held) in sorted(found.items()))


def _agent_view(view: AgentView, raw: bytes | None) -> AgentView:
    if raw is None:
        return view
    try:
        return replace(view, status=decode_agent_status(view.node, raw))
    except InvalidValue as e:
        return replace(view, invalid=str(e))


def _problems(overview: Overview, expect_lbs: bool, served_health: frozenset[str], now: float | None
              ) -> tuple[str, ...]:
    problems = [f"{r.key}: rejected: {r.reason}" for r in overview.rejected]
    problems += _agent_problems(overview.agents, now)
    for service in overview.catalog.services:
        if not service.served(served_health):
            problems.append(f"service {service.name}: no served endpoint ({len(service.all_endpoints)} registered)")
    for lb in overview.lbs:
        if lb.status is None:
            problems.append(f"LB node {lb.node}: invalid status value: {lb.invalid}")
            continue
        problems += [f"LB node {lb.node}: {where}: {error}" for where, error in lb.status.errors.items()]
        problems += [f"LB node {lb.node}: {target}: service {service} quarantined (held back, not as "
                     f"registered): {reason}" for target, service, reason in lb.status.quarantined]
        if not lb.status.connected and "registry" not in lb.status.errors:
            problems.append(f"LB node {lb.node}: not connected to the registry")
        if lb.behind:
            problems.append(_behind_problem(lb, overview))
    if expect_lbs and not overview.lbs:
        problems.append("no LB node reports its status (is `lbgen watch` running?)")
    return tuple(problems)


def _behind_problem(lb: LbView, overview: Overview) -> str:
    applied = lb.status.revision if lb.status else 0
    if lb.behind_why == CHANGED:
        return f"LB node {lb.node}: applied revision {applied}, behind the registry's {overview.services_revision}"
    if lb.behind_why == COMPACTED:
        return (f"LB node {lb.node}: applied revision {applied} is compacted away: a deletion since cannot be "
                f"ruled out (registry at {overview.revision})")
    return f"LB node {lb.node}: applied revision {applied}, keys under services/ were deleted since"


def _agent_problems(agents: tuple[AgentView, ...], now: float | None) -> list[str]:
    problems = []
    for agent in agents:
        if agent.invalid:
            problems.append(f"agent {agent.node}: invalid presence value: {agent.invalid}")
        elif agent.status is not None:
            problems += agent_problems(agent.status, now)
    return problems


def quarantines(overview: Overview) -> dict[str, list[tuple[str, str]]]:
    """Service → (`node/target`, reason) for every LB target that holds it back."""
    found: dict[str, list[tuple[str, str]]] = {}
    for lb in overview.lbs:
        for target, service, reason in lb.status.quarantined if lb.status else ():
            found.setdefault(service, []).append((f"{lb.node}/{target}", reason))
    return found


def overview_to_dict(overview: Overview, now: float, served_health: frozenset[str] = DEFAULT_SERVED_HEALTH
                     ) -> dict[str, Any]:
    """The `--json` document; `now` (wall clock) gives each LB status its age in seconds. An endpoint
    of a service some LB holds back (quarantined) is not `served`: that LB serves an older state."""
    held = quarantines(overview)
    return {
        "prefix": overview.prefix,
        "revision": overview.revision,
        "services_revision": overview.services_revision,
        "services": [
            {"name": s.name, "spec": dict(s.spec), "endpoints": [
                {"id": e.id, **e.to_dict(), "served": e.is_served(served_health) and s.name not in held,
                 "draining": e.id in overview.draining}
                for e in s.all_endpoints
            ], "quarantined": [{"lb": where, "reason": reason} for where, reason in held.get(s.name, ())]}
            for s in overview.catalog.services
        ],
        "agents": [_agent_dict(a, now) for a in overview.agents],
        "lb_nodes": [_lb_dict(lb, now) for lb in overview.lbs],
        "rejected": [{"key": r.key, "reason": r.reason} for r in overview.rejected],
        "problems": list(overview.problems),
    }


def status_document(registry: str, overview: Overview, now: float) -> dict[str, Any]:
    """`lbgen status --json`, which the dashboard's JSON API serves too: where it was read, then the overview."""
    return {"registry": registry, **overview_to_dict(overview, now)}


def _agent_dict(agent: AgentView, now: float) -> dict[str, Any]:
    """An agent in the `--json` document: `reporting` says whether it publishes its presence."""
    found = {"node": agent.node, "endpoints": agent.endpoints, "served": agent.served,
             "leases": [f"{lease:x}" for lease in agent.leases], "reporting": agent.status is not None}
    if agent.invalid:
        return found | {"invalid": agent.invalid}
    if (s := agent.status) is None:
        return found
    return found | {
        "version": s.version, "docker_reachable": s.docker_reachable, "docker_since_age": age(s.docker_since, now),
        "containers": s.containers, "registered": s.endpoints, "error": s.error, "error_age": age(s.error_at, now),
        "resync_age": age(s.resync_at, now), "resync_interval": s.resync_interval, "age": age(s.updated_at, now),
    }


def _lb_dict(lb: LbView, now: float) -> dict[str, Any]:
    if lb.status is None:
        return {"node": lb.node, "invalid": lb.invalid}
    status = lb.status
    return {
        "node": lb.node, "revision": status.revision, "behind": lb.behind, "behind_why": lb.behind_why,
        "connected": status.connected,
        "error": status.error, "version": status.version,
        "age": age(status.updated_at, now),
        "targets": {name: {"revision": t.revision, "error": t.error, "up": t.up,
                           "applied_age": age(t.applied_at, now), "quarantined": dict(t.quarantined)}
                    for name, t in status.targets.items()},
    }


def age(then: float | None, now: float) -> float | None:
    """Seconds from `then` to `now` (never negative: clocks of two hosts differ), None if unknown."""
    return None if then is None else round(max(0.0, now - then), 1)
