"""Random catalogs and random changes for the fragment cache's tests (issue 13): a service keeps
its `Service` object while unchanged, as the catalog reducer does, so the cache can hit."""

from __future__ import annotations

import msgspec
from typing import Any

from hypothesis import strategies as st

from lbgen.core.model import Catalog, Endpoint, Service
from tests.unit.catalogs import ROOT, TEMPLATES

NAMES = ("api", "db", "shop", "web")
HOSTS = ("a.test", "b.test", "*.c.test")
PATHS = ("/", "/api", "/api/v1")
PORTS = (8080, 8081, 9000)
ADDRESSES = ("10.0.0.1", "10.0.0.2", "fd00::1", "backend.test")
IP_ADDRESSES = ADDRESSES[:3]  # for the real checkers: a host name must resolve
HEALTH = ("healthy", "unhealthy", "starting", "none")

# Templates that must fall back (or partly): what their loops read is not in a key, or the loop does
# not qualify. Each still renders byte-identical text with the cache.
CUSTOM = {
    "loop_index": "{% for s in services %}{{ loop.index }} {{ s.name }}\n{% endfor %}",
    "namespace": ("{% set ns = namespace(n=0) %}{% for s in services %}{% set ns.n = ns.n + s.endpoints"
                  " | length %}{{ ns.n }}\n{% endfor %}"),
    "namespace_read": ("{% set ns = namespace(n=0) %}{% for s in services %}{% set ns.n = ns.n + 1 %}"
                       "{% for e in s.all_endpoints %}{{ ns.n }} {{ e.id }}\n{% endfor %}{% endfor %}"),
    "caller": ("{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}"
               "{% call(s) each(services) %}{{ s.name }} {{ s.endpoints | length }}\n{% endcall %}"),
    "macro_outside": ("{% macro line(e) %}{{ e.id }} {{ e.weight }}{% endmacro %}{% for s in services %}"
                      "{% for e in s.endpoints %}{{ line(e) }}\n{% endfor %}{% endfor %}"),
    "joiner": ("{% set comma = joiner(',') %}{% for s in services %}{{ comma() }}{{ s.name }}"
               "{% for e in s.endpoints %}:{{ e.id }}{% endfor %}{% endfor %}\n"),
    "cycler": ("{% set c = cycler('x', 'y') %}{% for s in services %}{{ c.next() }}{{ s.name }}"
               "{% for e in s.endpoints %}:{{ e.port }}{% endfor %}\n{% endfor %}"),
    "context_global": ("{% for s in services %}{% for slot in slots(s, 2) %}{{ slot.name }} {{ slot.addr }}\n"
                       "{% endfor %}{% endfor %}"),
    "slots_by_listener": ("{% for l in layout(services).tcp %}{% for slot in slots(l.service, 2) %}{{ l.port }} "
                          "{{ slot.name }} {{ slot.addr }}\n{% endfor %}{% endfor %}"),
    "chains_and_vars": (
        "{% set listen = vars.addr | default('127.0.0.1') %}{% set table = {'http': 'H', 'tcp': 'T'} %}"
        "{% for listener in layout(services).http %}{% for vhost in listener.hosts %}"
        "{{ listen }}:{{ listener.port }} {{ vhost.names | join(' ') }}{% for r in vhost.routes %}"
        " {{ r.path }}={{ r.service.name }}/{{ table[r.service.mode] }}{% endfor %}"
        "{% if vars.extra is defined %} {{ vars.extra }}{% endif %}{% if vars.none is defined %}!{% endif %}\n"
        "{% endfor %}{% endfor %}"),
    "revision": "{% for s in services %}{{ s.name }} {{ revision }}{% for e in s.endpoints %} {{ e.id }}{% endfor %}\n"
                "{% endfor %}",
    "filtered_else": ("{% for s in services if s.endpoints %}{{ s.name }}{% set n = s.endpoints | length %}"
                      "{% for e in s.endpoints | sort(attribute='weight') %} {{ e | hostport }}{% else %}-"
                      "{% endfor %} {{ n }}\n{% else %}none\n{% endfor %}"),
    "tuple_target": ("{% for key, value in vars | dictsort %}{{ key }}={{ value }}{% for s in services %}"
                     " {{ s.name }}{% endfor %}\n{% endfor %}"),
    # The outer body has no key (a joiner): it renders in place, with the middle loop rewritten in it.
    "inline_outer": ("{% set comma = joiner(',') %}{% for l in layout(services).http %}{{ comma() }}{{ l.port }}"
                     "{% for v in l.hosts %} {{ v.names | join(' ') }}{% for r in v.routes %}={{ r.path }}"
                     "{% endfor %}{% endfor %}\n{% endfor %}"),
    "filtered_loop": ("{% for s in services if s.mode == 'tcp' and vars.extra %}{{ s.name }}"
                      "{% for e in s.endpoints %} {{ e.id }}{% endfor %}\n{% endfor %}"),
    "fails_on_tcp": ("{% for s in services %}{{ s.name }}{% for e in s.endpoints %}{{ e.id }}{% endfor %}"
                     "{% if s.mode == 'tcp' %}{{ nope.x }}{% endif %}\n{% endfor %}"),
}


def shipped(kind: str) -> str:
    return (ROOT / "templates" / TEMPLATES[kind]).read_text()


@st.composite
def specs(draw: st.DrawFn, ports: tuple[int, ...] = PORTS) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["listen"] = draw(st.sampled_from(ports))
    if draw(st.integers(0, 4)) == 0:
        spec["mode"] = "tcp"
    if draw(st.booleans()):
        spec["hosts"] = draw(st.lists(st.sampled_from(HOSTS), max_size=2, unique=True))
    if draw(st.booleans()):
        spec["path"] = draw(st.sampled_from(PATHS))
    if draw(st.booleans()):
        spec["balance"] = draw(st.sampled_from(("roundrobin", "leastconn", "random", "source")))
    if draw(st.integers(0, 3)) == 0:
        spec["health_check"] = "/healthz"
    return spec


@st.composite
def endpoints(draw: st.DrawFn, service: str, addresses: tuple[str, ...] = ADDRESSES) -> Endpoint:
    number = draw(st.integers(1, 6))
    return Endpoint(id=f"n{number}.{service}", address=draw(st.sampled_from(addresses)),
                    port=draw(st.integers(1, 3)) * 1000, weight=draw(st.integers(0, 3)),
                    node=f"n{number}", health=draw(st.sampled_from(HEALTH)))


@st.composite
def catalogs(draw: st.DrawFn, addresses: tuple[str, ...] = ADDRESSES, ports: tuple[int, ...] = PORTS
             ) -> dict[str, Service]:
    found = {}
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True)):
        found[name] = _service(name, draw(specs(ports)), draw(st.lists(endpoints(name, addresses), max_size=4)))
    return found


def sites(port: int, count: int) -> dict[str, Service]:
    """`count` unchanging sites on `port`, each its own host: beside the random services, a port
    holds many servers (the layout moves changed ones into place instead of sorting them all)."""
    return {f"site{i:02d}": Service(f"site{i:02d}", {"listen": port, "hosts": [f"site{i:02d}.test"]},
                                    (Endpoint(f"n1.site{i:02d}", "10.0.0.3", 1000, health="healthy"),))
            for i in range(count)}


def _service(name: str, spec: dict[str, Any], found: list[Endpoint]) -> Service:
    by_id = {e.id: e for e in found}
    return Service(name, spec, tuple(by_id[i] for i in sorted(by_id)))


@st.composite
def changes(draw: st.DrawFn, services: dict[str, Service], addresses: tuple[str, ...] = ADDRESSES,
            ports: tuple[int, ...] = PORTS) -> dict[str, Service]:
    """One change, as a registry write makes it: only the touched service gets a new object."""
    name = draw(st.sampled_from(NAMES))
    after = dict(services)
    old = services.get(name)
    what = draw(st.sampled_from(("endpoint", "drop_endpoint", "endpoint_field", "spec", "service")))
    if old is None or what == "service":
        if old is None:
            after[name] = _service(name, draw(specs(ports)), draw(st.lists(endpoints(name, addresses), max_size=3)))
        else:
            del after[name]
    elif what == "endpoint":
        after[name] = _service(name, dict(old.spec), [*old.all_endpoints, draw(endpoints(name, addresses))])
    elif what == "drop_endpoint" and old.all_endpoints:
        gone = draw(st.sampled_from(old.all_endpoints))
        after[name] = _service(name, dict(old.spec), [e for e in old.all_endpoints if e is not gone])
    elif what == "endpoint_field" and old.all_endpoints:
        picked = draw(st.sampled_from(old.all_endpoints))
        field, value = draw(st.sampled_from((
            ("weight", 0), ("weight", 2), ("health", "unhealthy"), ("health", "healthy"),
            ("address", "10.0.0.9"), ("port", 7000))))
        changed = msgspec.structs.replace(picked, **{field: value})
        after[name] = _service(name, dict(old.spec), [changed if e is picked else e for e in old.all_endpoints])
    else:
        after[name] = _service(name, draw(specs(ports)), list(old.all_endpoints))
    return after


def catalog_of(services: dict[str, Service], revision: int) -> Catalog:
    return Catalog(revision=revision, services=tuple(services[n] for n in sorted(services)))
