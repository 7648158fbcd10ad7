"""Containers as a deploy leaves them, and fakes of Docker, etcd, the agent and the clock, for the
plan and deployer unit tests."""

from __future__ import annotations

import json
from typing import Any

from lbgen.core.deploy_spec import DeploySpec, parse_deploy_spec
from lbgen.core.model import Endpoint
from lbgen.core.schema import encode_endpoint
from lbgen.errors import LeaseLost
from lbgen.core.values import ContainerInfo, KeyValue, Snapshot
from tests.unit.fakes import FakeClock, FakeDocker, info

__all__ = ["FakeClock", "FakeDocker", "info"]  # kept importable from here: the deploy tests' world


def make_spec(project: str = "demo", **web: Any) -> DeploySpec:
    """A one-service spec (`web`, 3 replicas from port 18081) with `web` overrides."""
    service = {"image": "lbgen-demo:1", "replicas": 3, **({} if "ports" in web else {"port": 18081}), **web}
    return parse_deploy_spec({"project": project, "services": {"web": service}}, project)


def deployed(spec: DeploySpec, replica: int, port: int, service: str = "web", **kwargs: Any) -> ContainerInfo:
    """Replica `replica` of `service` on `port`, in sync with `spec` unless labels say otherwise."""
    found = spec.service(service)
    assert found is not None
    return info(found.container_spec(spec.project, replica, port), **kwargs)


class FakeStore:
    """A dict registry with revisions and leases; enough of the Store port for the deployer."""

    def __init__(self, log: list[tuple[str, ...]]) -> None:
        self.log, self.revision, self.kv, self.leases = log, 1, {}, {}
        self.next_lease = 100

    def snapshot(self, prefix: str) -> Snapshot:
        items = tuple(v for k, v in sorted(self.kv.items()) if k.startswith(prefix))
        return Snapshot(self.revision, items)

    def get(self, key: str) -> KeyValue | None:
        return self.kv.get(key)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        if lease and lease not in self.leases:
            raise LeaseLost(f"lease {lease} not found")
        self.revision += 1
        self.kv[key] = KeyValue(key, value, self.revision, lease)
        self.log.append(("put", key, value.decode()))
        return self.revision

    def delete(self, key: str) -> bool:
        self.log.append(("delete", key))
        if self.kv.pop(key, None) is None:
            return False
        self.revision += 1
        return True

    def grant_lease(self, ttl: int) -> int:
        self.next_lease += 1
        self.leases[self.next_lease] = ttl
        return self.next_lease

    def revoke_lease(self, lease: int) -> None:
        self.log.append(("revoke", str(lease)))
        self.leases.pop(lease, None)
        for key in [k for k, v in self.kv.items() if v.lease == lease]:
            self.delete(key)


class FakeAgent:
    """Registers every running labelled container on each tick, like `lbgen agent` on Docker events."""

    def __init__(self, docker: FakeDocker, store: FakeStore, prefix: str = "/lbgen", node: str = "host-a",
                 address: str = "127.0.0.1") -> None:
        self.docker, self.store, self.prefix = docker, store, prefix
        self.node, self.address = node, address
        self.lease = store.grant_lease(15)

    def tick(self) -> None:
        desired = {}
        for c in self.docker.list_containers(label="lbgen.service"):
            eid = f"{self.node}.{c.name}.{c.labels['lbgen.port']}"
            key = f"{self.prefix}/services/{c.labels['lbgen.service']}/endpoints/{eid}"
            desired[key] = Endpoint(eid, self.address, int(c.labels["lbgen.port"]), 1, self.node, c.id, c.health)
        mine = [k for k, v in self.store.kv.items() if "/endpoints/" in k and v.lease == self.lease]
        for key in [k for k in mine if k not in desired]:
            self.store.delete(key)
        for key, endpoint in desired.items():
            if f"{self.prefix}/drain/{endpoint.id}" in self.store.kv:  # the drain contract
                endpoint = endpoint.with_weight(0)
            current = self.store.kv.get(key)
            if current is None or current.value != encode_endpoint(endpoint):
                self.store.put(key, encode_endpoint(endpoint), lease=self.lease)


class FakeLB:
    """An LB node that applies the registry's latest revision whenever it ticks."""

    def __init__(self, store: FakeStore, node: str = "lb1", prefix: str = "/lbgen") -> None:
        self.store, self.key, self.frozen = store, f"{prefix}/lb/{node}", False
        self.quarantined: dict[str, str] = {}  # service → reason: held at an older state

    def tick(self) -> None:
        if not self.frozen:
            targets = {"nginx": {"revision": self.store.revision, "quarantined": self.quarantined}}
            self.store.put(self.key, json.dumps({"revision": self.store.revision, "targets": targets}).encode())
