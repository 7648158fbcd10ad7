"""`lbgen status`: the whole system from one registry read — services and endpoints, the Docker
hosts' agents, every LB node's applied revision and errors, and what is wrong. Besides the snapshot,
one count-only read per distinct applied revision tells a node that missed a deletion.

Exit status: 0 whenever the registry could be read (the problems are printed); with `--check`,
1 when there is any problem, for monitoring. Registry errors exit 3 as everywhere.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Mapping, Sequence

from lbgen.cli.common import add_store_arguments, open_store, registry_prefix, registry_url
from lbgen.core.behind import COMPACTED, revisions_to_count
from lbgen.core.lb_node_status import TargetStatus
from lbgen.core.model import Endpoint, Service
from lbgen.core.overview import AgentView, LbView, Overview, age, build_overview, quarantines, status_document
from lbgen.core.schema import registry_root, services_prefix
from lbgen.errors import Compacted
from lbgen.ports import Store


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `status` sub-command."""
    parser = commands.add_parser(
        "status",
        description="Read the registry once and show every service with its endpoints (served or "
        "not), the Docker hosts whose agents registered them, and each LB node's applied revision, "
        "connection and last error. Exit 0 when the registry was read; with --check, 1 on any problem.")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of text")
    parser.add_argument("--check", action="store_true", help="exit 1 when a problem is listed (for monitoring)")
    add_store_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    url, prefix = registry_url(args), registry_prefix(args)
    store = open_store(args, url, prefix)
    try:
        snapshot = store.snapshot(registry_root(prefix))
        counts = {revision: _count_at(store, services_prefix(prefix), revision)
                  for revision in revisions_to_count(prefix, snapshot)}
    finally:
        store.close()
    now = time.time()
    overview = build_overview(prefix, snapshot, expect_lbs=url.kind != "file", now=now, counts=counts)
    if args.json:
        print(json.dumps(status_document(str(url), overview, now), indent=2))
    else:
        print("\n".join(format_overview(str(url), overview, now)))
    return 1 if args.check and overview.problems else 0


def _count_at(store: Store, prefix: str, revision: int) -> int | None:
    """Keys under `prefix` at `revision`, None when that history is compacted."""
    try:
        return store.count(prefix, revision)
    except Compacted:
        return None


def format_overview(where: str, overview: Overview, now: float) -> list[str]:
    """The text report, one line per entry, columns aligned."""
    lines = [f"registry {where} prefix {overview.prefix} at revision {overview.revision} "
             f"(services last changed at {overview.services_revision})", ""]
    lines += _services(overview.catalog.services, overview.draining, quarantines(overview)) + [""]
    lines += _agents(overview.agents, now) + [""]
    lines += _lbs(overview.lbs, now) + [""]
    lines.append(f"problems ({len(overview.problems)}):" if overview.problems else "problems: none")
    lines += [f"  {problem}" for problem in overview.problems]
    return lines


def _services(services: Sequence[Service], draining: frozenset[str], held: Mapping[str, list[tuple[str, str]]]
              ) -> list[str]:
    if not services:
        return ["services: none registered"]
    lines = [f"services ({len(services)}):"]
    for service in services:
        spec = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in service.spec.items())
        served = "held back" if service.name in held else "served"
        lines.append(f"  {service.name}  {spec or '(no spec)'}  "
                     f"{len(service.served())}/{len(service.all_endpoints)} endpoints {served}")
        lines += [f"    quarantined on {where} (held back, not as registered): {reason}"
                  for where, reason in held.get(service.name, ())]
        lines += table([_endpoint_row(e, e.id in draining, service.name in held) for e in service.all_endpoints],
                       indent="    ")
    return lines


def _endpoint_row(e: Endpoint, draining: bool, quarantined: bool = False) -> list[str]:
    address = f"[{e.address}]:{e.port}" if ":" in e.address else f"{e.address}:{e.port}"
    state = "served" if e.is_served() else "not served (weight 0)" if e.weight == 0 else "not served"
    if quarantined and e.is_served():
        state = "quarantined (not served as registered)"
    state += ", draining" if draining else ""
    return [e.id, address, e.health, f"weight {e.weight}", f"node {e.node or '-'}", state]


def _agents(agents: Sequence[AgentView], now: float) -> list[str]:
    if not agents:
        return ["agents: none reporting and no endpoint names a node"]
    rows = [["NODE", "DOCKER", "CONTAINERS", "ENDPOINTS", "SERVED", "RESYNC", "VERSION", "LEASE"]]
    rows += [[a.node or "(none: written by hand)", *_presence(a, now)[:2], str(a.endpoints), str(a.served),
              *_presence(a, now)[2:], ",".join(f"{lease:x}" for lease in a.leases) or "-"] for a in agents]
    return [f"agents ({len(agents)}):"] + table(rows, indent="  ")


def _presence(agent: AgentView, now: float) -> list[str]:
    """DOCKER, CONTAINERS, RESYNC, VERSION for an agent's row, from its presence value."""
    if agent.invalid:
        return ["invalid presence (see problems)", "-", "-", "-"]
    if (s := agent.status) is None:
        return ["not reporting", "-", "-", "-"]
    docker = f"up {_for(s.docker_since, now)}" if s.docker_reachable else f"UNREACHABLE {_for(s.docker_since, now)}"
    return [docker.rstrip(), str(s.containers), _ago(s.resync_at, now), s.version or "-"]


def _for(then: float | None, now: float) -> str:
    seconds = age(then, now)
    return "" if seconds is None else f"for {seconds:g}s"


def _lbs(lbs: Sequence[LbView], now: float) -> list[str]:
    if not lbs:
        return ["LB nodes: none reporting"]
    rows = [["NODE", "REVISION", "STATE", "CONNECTED", "UPDATED", "VERSION"]]
    details: list[str] = []
    for lb in lbs:
        if lb.status is None:
            rows.append([lb.node, "-", f"invalid status: {lb.invalid}", "-", "-", "-"])
            continue
        s = lb.status
        rows.append([lb.node, str(s.revision), _state(lb), "yes" if s.connected else "no",
                     _ago(s.updated_at, now), s.version or "-"])
        targets = [[f"{lb.node}/{name}", str(t.revision), f"applied {_ago(t.applied_at, now)}", _note(t)]
                   for name, t in s.targets.items()]
        details += table(targets, indent="    ")
    return [f"LB nodes ({len(lbs)}):"] + table(rows, indent="  ") + ["  targets:"] + details


def _state(lb: LbView) -> str:
    """An LB node in a word: a target's LB not running comes first, it is never "in sync"."""
    s = lb.status
    if s and s.down:
        return "LB down"
    if lb.behind_why == COMPACTED:
        return "behind?"
    if lb.behind:
        return "behind"
    if s and s.errors:
        return "failing"
    return "quarantined" if s and s.quarantined else "in sync"


def _note(target: TargetStatus) -> str:
    """What is wrong with one target: its LB not running, its error, else its quarantined services;
    then how many changes went live through the runtime API (and fell back to a reload)."""
    down = "LB DOWN " if not target.up else ""
    runtime = (f"  runtime updates {target.runtime_updates}, fallbacks {target.runtime_fallbacks}"
               if target.runtime_updates or target.runtime_fallbacks else "")
    if target.error:
        return f"{down}error: {target.error}{runtime}"
    return down + (f"quarantined: {', '.join(target.quarantined)}" if target.quarantined else "") + runtime


def _ago(then: float | None, now: float) -> str:
    seconds = age(then, now)
    return "never" if seconds is None else f"{seconds:g}s ago"


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Rows with every column padded to its widest cell (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows), default=0))]
    return [indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
