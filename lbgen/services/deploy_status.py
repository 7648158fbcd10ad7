"""`lbgen deploy status`: each replica's container, registration and the LB nodes serving it."""

from __future__ import annotations

import msgspec

from lbgen.core.deploy_hosts import assign
from lbgen.core.deploy_plan import Containers, Deployed, read_all
from lbgen.core.deploy_spec import DeploySpec
from lbgen.services.deploy_registry import Registered, Registry


class ReplicaStatus(msgspec.Struct, frozen=True):
    """One replica for `lbgen deploy status`: its container (None when missing) and registration."""

    subject: str
    deployed: Deployed | None
    config: str  # current | stale | orphan
    registered: Registered | None = None
    served_by: tuple[str, ...] = ()
    host: str = ""  # the host it is on (or placed on, when missing)

    @property
    def order(self) -> tuple[str, str, int, str]:
        service, _, replica = self.subject.partition(".")
        return (self.host, service, int(replica), self.deployed.name if self.deployed else "")

    def cells(self, registry: bool) -> tuple[str, ...]:
        d = self.deployed
        if d is None:
            return (self.subject, "(missing)", "", "", "", "", "", "", "")
        unknown = "not registered" if registry else "-"
        endpoint = self.registered.endpoint.id if self.registered else unknown
        weight = str(self.registered.endpoint.weight) if self.registered else ""
        served = ", ".join(self.served_by) or ("none" if registry else "-")
        return (self.subject, d.name, str(d.port), d.state, d.health, self.config, endpoint, weight, served)


def replica_status(
    spec: DeploySpec, containers: Containers, registry: Registry | None
) -> tuple[list[ReplicaStatus], dict[str, int]]:
    """Every replica the spec wants or a container holds (per host), and the LB nodes' applied revisions.

    An LB node serves a replica when it has applied a revision at or after the replica's
    registration, and the endpoint is served (healthy or check-less, weight above 0).
    """
    lbs = registry.lb_revisions() if registry else {}
    rows = []
    for d in read_all(containers):
        service = spec.service(d.service)
        expected = service.config_hash(spec.host(d.host).bind) if service else ""
        config = "orphan" if service is None else "current" if d.config_hash == expected else "stale"
        found = registry.endpoint(d.service, d.id) if registry else None
        served = found is not None and found.endpoint.is_served()
        nodes = tuple(n for n, rev in sorted(lbs.items()) if served and found and rev >= found.revision)
        rows.append(ReplicaStatus(f"{d.service}.{d.replica}", d, config, found, nodes, d.host))
    present = {(r.subject, r.host) for r in rows}
    rows += [
        ReplicaStatus(f"{s.name}.{i}", None, "", host=host)
        for s in spec.services for i, host in assign(s.placement).items() if (f"{s.name}.{i}", host) not in present
    ]
    return sorted(rows, key=lambda r: r.order), lbs
