"""Containers as a deploy leaves them, and fakes of Docker, etcd, the agent and the clock, for the
plan and deployer unit tests."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Callable

from lbgen.core.deploy_spec import DeploySpec, parse_deploy_spec
from lbgen.core.model import Endpoint
from lbgen.core.schema import encode_endpoint
from lbgen.errors import LeaseLost
from lbgen.ports import ContainerInfo, ContainerSpec, KeyValue, Snapshot


def make_spec(project: str = "demo", **web: Any) -> DeploySpec:
    """A one-service spec (`web`, 3 replicas from port 18081) with `web` overrides."""
    service = {"image": "lbgen-demo:1", "replicas": 3, **({} if "ports" in web else {"port": 18081}), **web}
    return parse_deploy_spec({"project": project, "services": {"web": service}}, project)


def info(spec: ContainerSpec, cid: str = "", state: str = "running", health: str = "healthy",
         labels: dict[str, str] | None = None) -> ContainerInfo:
    """What `docker inspect` would report for a container created from `spec` (`labels` override)."""
    merged = {**spec.labels, **(labels or {})}
    return ContainerInfo(
        id=cid or f"id-{spec.name}", name=spec.name, image=spec.image, state=state, health=health,
        labels=merged, env=dict(spec.env), network_mode=spec.network_mode,
    )


def deployed(spec: DeploySpec, replica: int, port: int, service: str = "web", **kwargs: Any) -> ContainerInfo:
    """Replica `replica` of `service` on `port`, in sync with `spec` unless labels say otherwise."""
    found = spec.service(service)
    assert found is not None
    return info(found.container_spec(spec.project, replica, port), **kwargs)


class FakeClock:
    """Time moves only when someone sleeps; each sleep lets the fake world take a step (`on_sleep`)."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.on_sleep: list[Callable[[], None]] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.time += seconds
        for hook in self.on_sleep:
            hook()


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


class FakeDocker:
    """Containers in a dict. `health(spec, inspections)` scripts each container's health status."""

    def __init__(self, log: list[tuple[str, ...]], health: Callable[[ContainerSpec, int], str] | None = None) -> None:
        self.log, self.containers, self.specs, self.inspections = log, {}, {}, {}
        self.health = health or (lambda spec, n: "healthy" if n > 1 else "starting")
        self.count = 0

    def add(self, container: ContainerInfo) -> None:
        self.containers[container.id] = container

    def create_and_start(self, spec: ContainerSpec) -> str:
        self.count += 1
        cid = f"c{self.count:04d}{spec.name}"
        self.log.append(("create", spec.name))
        self.specs[cid] = spec
        self.add(info(spec, cid, health="starting"))
        return cid

    def inspect(self, container_id: str) -> ContainerInfo | None:
        current = self.containers.get(container_id)
        if current is None or container_id not in self.specs or current.state != "running":
            return current
        self.inspections[container_id] = n = self.inspections.get(container_id, 0) + 1
        health = self.health(self.specs[container_id], n)
        self.containers[container_id] = replace(current, health=health, state="exited" if health == "exited" else "running")
        return self.containers[container_id]

    def list_containers(self, label: str | None = None, include_stopped: bool = False) -> list[ContainerInfo]:
        key, has_value, value = (label or "").partition("=")

        def matches(c: ContainerInfo) -> bool:
            return not key or (c.labels.get(key) == value if has_value else key in c.labels)

        return [c for c in self.containers.values() if (include_stopped or c.state == "running") and matches(c)]

    def stop(self, container_id: str, timeout: float) -> None:
        self.log.append(("stop", self.containers[container_id].name))
        self.containers[container_id] = replace(self.containers[container_id], state="exited")

    def remove(self, container_id: str) -> None:
        self.log.append(("remove", self.containers.pop(container_id).name))


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
                endpoint = replace(endpoint, weight=0)
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
