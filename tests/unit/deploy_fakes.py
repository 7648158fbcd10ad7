"""Containers as a deploy would leave them, for the plan and deployer unit tests."""

from __future__ import annotations

from typing import Any

from lbgen.core.deploy_spec import DeploySpec, parse_deploy_spec
from lbgen.ports import ContainerInfo, ContainerSpec


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
