"""Catalogs for render tests, built through the real registry validation (schema + reducer), and
rendering with the shipped templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from lbgen.core.catalog import catalog_from_snapshot
from lbgen.core.model import Catalog
from lbgen.core.render import render
from lbgen.core.settings import Target
from lbgen.core.values import KeyValue, Snapshot

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/lbgen"
TEMPLATES = {"nginx": "nginx.conf.j2", "haproxy": "haproxy.cfg.j2"}


def render_default(kind: str, catalog: Catalog, variables: dict[str, Any]) -> str:
    """Render a shipped template (templates/) the way the watcher does."""
    name = TEMPLATES[kind]
    source = (ROOT / "templates" / name).read_text()
    return render(source, catalog, Target(name=kind, template=name, dest="/dev/null", kind=kind, vars=variables))


def catalog_from_tree(tree: Mapping[str, Any], revision: int = 7) -> Catalog:
    """A registry file's `services:` tree → the catalog the watcher would build; invalid values fail."""
    items = []
    for name, service in tree.items():
        if "spec" in service:
            items.append(KeyValue(f"{PREFIX}/services/{name}/spec", json.dumps(service["spec"]).encode(), 1))
        for eid, value in (service.get("endpoints") or {}).items():
            items.append(KeyValue(f"{PREFIX}/services/{name}/endpoints/{eid}", json.dumps(value).encode(), 1))
    catalog, rejected = catalog_from_snapshot(PREFIX, Snapshot(revision, tuple(items)))
    assert not rejected, rejected
    return catalog


def example_catalog() -> Catalog:
    """examples/registry.yaml as a catalog."""
    return catalog_from_tree(yaml.safe_load((ROOT / "examples" / "registry.yaml").read_text())["services"])


def tricky_catalog() -> Catalog:
    """Every corner the default templates must survive: empty services, tcp, shared ports and hosts,
    wildcard hosts, nested paths, weight 0, every health state, IPv6, a route conflict."""
    def ep(port: int, **extra: Any) -> dict[str, Any]:
        return {"address": "127.0.0.1", "port": port, **extra}

    return catalog_from_tree({
        "empty": {"spec": {"listen": 8081, "hosts": ["empty.test"]}},
        "empty-tcp": {"spec": {"listen": 9001, "mode": "tcp"}, "endpoints": {"e1": ep(2, health="unhealthy")}},
        "shop": {"spec": {"listen": 8081, "hosts": ["shop.test", "*.shop.test"], "balance": "random"},
                 "endpoints": {f"s{i}": ep(3000 + i, health=h) for i, h in
                               enumerate(["healthy", "starting", "unhealthy", "none"])}},
        "shop-api": {"spec": {"listen": 8081, "hosts": ["shop.test"], "path": "/api/v1/"},
                     "endpoints": {"a": ep(3100, weight=0), "b": ep(3101, weight=256),
                                   "c": {"address": "::1", "port": 3102}}},
        "catchall": {"spec": {"listen": 8081, "balance": "source", "health_check": "/ping"},
                     "endpoints": {"c": ep(3200)}},
        "docs": {"spec": {"listen": 8081, "path": "/docs"}, "endpoints": {"d": ep(3300)}},
        "dup": {"spec": {"listen": 8081, "hosts": ["shop.test"], "path": "/api/v1"},
                "endpoints": {"x": ep(3400)}},
        "redis": {"spec": {"listen": 9002, "mode": "tcp", "balance": "leastconn"},
                  "endpoints": {f"r{i}": ep(6379 + i) for i in range(5)}},
        "port-thief": {"spec": {"listen": 9002, "mode": "http"}, "endpoints": {"p": ep(3500)}},
        "internal": {"endpoints": {"i": ep(3600)}},
    })
