"""What a target last applied, kept beside its dest so the drop guard survives a restart (issue 10.6).

`lbgen watch` and `lbgen render` write it after each apply; at start the guard compares the
registry with it, so a watcher restarted while the agents were down holds their services at what
the LB serves instead of rendering them empty. The value is the applied catalog in the registry
contract's own encodings, read back through the same validators as a registry value.
"""

from __future__ import annotations

import json
from operator import is_
from typing import Annotated, Any, Literal

import msgspec

from lbgen.core.model import Catalog, Service
from lbgen.core.schema import (
    NAME_RE,
    EndpointValue,
    check_int,
    check_name,
    check_object,
    endpoint_from_typed,
    endpoint_from_value,
    spec_from_value,
)
from lbgen.errors import InvalidValue

FORMAT = 1


def encode_applied(catalog: Catalog) -> bytes:
    """The catalog as compact JSON, keys sorted: revision, and per service its spec and endpoints by id."""
    services = {s.name: _service_value(s) for s in catalog.services}
    return _compact({"format": FORMAT, "revision": catalog.revision, "services": services})


class AppliedEncoder:
    """`encode_applied`, byte for byte, re-encoding only the services whose object changed since
    the last call (the catalog hands out the same `Service` while it is unchanged): encoding all
    10,500 keys after every apply cost more CPU than the apply itself (issue 13)."""

    def __init__(self) -> None:
        self._pieces: dict[str, tuple[Service, bytes]] = {}

    def encode(self, catalog: Catalog) -> bytes:
        self._pieces = pieces = {service.name: self._known(service) for service in catalog.services}
        body = b",".join(_compact(name) + b":" + pieces[name][1] for name in sorted(pieces))
        return b'{"format":%d,"revision":%d,"services":{%s}}' % (FORMAT, catalog.revision, body)

    def piece(self, service: Service) -> bytes:
        """`service`'s part of the encoding (its spec and endpoints), kept for the next `encode`."""
        known = self._pieces[service.name] = self._known(service)
        return known[1]

    def _known(self, service: Service) -> tuple[Service, bytes]:
        known = self._pieces.get(service.name)
        return known if known and known[0] is service else (service, _compact(_service_value(service)))


def _service_value(service: Service) -> dict[str, Any]:
    return {"spec": dict(service.spec), "endpoints": {e.id: e.to_dict() for e in service.all_endpoints}}


# msgspec's encoder, keys sorted, writes what json.dumps(sort_keys=True, separators=(",", ":")) wrote for
# ASCII text in an eighth of the time: 2,000 endpoints in 0.5 ms instead of 4.1 (issue 13). Text beyond
# ASCII is written as UTF-8 rather than \u-escaped; both decode alike.
_compact = msgspec.json.Encoder(order="sorted").encode


class _AppliedService(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    spec: dict[str, Any] = {}
    endpoints: dict[str, EndpointValue] = {}


class _Applied(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """What `encode_applied` writes, each service left as its bytes (compared with a current
    service's encoding before anything in it is decoded), then decoded as `_AppliedService`, every
    endpoint checked by msgspec (issue 13)."""

    format: Literal[1]  # FORMAT
    revision: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    services: dict[str, msgspec.Raw]


_APPLIED = msgspec.json.Decoder(_Applied)
_SERVICE = msgspec.json.Decoder(_AppliedService)


def decode_applied(raw: bytes, like: Catalog | None = None, encoder: AppliedEncoder | None = None) -> Catalog:
    """The catalog `encode_applied` wrote; `InvalidValue` naming what is wrong otherwise.

    A file as lbgen writes it decodes through msgspec (`_Applied`): a restarted watcher reads its
    10,000 services in a fraction of the second the Python checks took; anything that path
    declines is read again by `_checked`, which accepts it or says why not. A service whose bytes
    are exactly `encoder`'s encoding of `like`'s service of that name is that very object, not
    decoded: a restarted watcher's baseline then holds no second copy of what did not change while
    it was down (issue 13: at 110,000 keys a restarted watcher held 152 MB, now 118), and the drop
    guard's comparison by identity finds only what did. The file holding exactly `like` (same
    revision, every service its own) reads as `like` itself: a one-shot render of an unchanged
    registry compares nothing more."""
    try:
        value = _APPLIED.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # and its ValidationError; deep nesting in a Raw or Any field
        return _checked(raw)
    current = {s.name: s for s in like.services} if like is not None else {}
    piece = (encoder or AppliedEncoder()).piece
    services = []
    for name in sorted(value.services):
        data, same = value.services[name], current.get(name)
        if same is not None and memoryview(data) == piece(same):
            services.append(same)
            continue
        try:
            service = _typed_service(name, _SERVICE.decode(data))
        except (msgspec.DecodeError, RecursionError):
            service = None
        if service is None:
            return _checked(raw)
        services.append(service)
    if like is not None and value.revision == like.revision and len(services) == len(like.services) \
            and all(map(is_, services, like.services)):
        return like
    return Catalog(value.revision, tuple(services))


def _typed_service(name: str, value: _AppliedService) -> Service | None:
    if not NAME_RE.fullmatch(name):
        return None
    endpoints = tuple(endpoint_from_typed(eid, value.endpoints[eid]) for eid in sorted(value.endpoints))
    if any(endpoint is None for endpoint in endpoints):
        return None
    try:
        spec = spec_from_value(value.spec)
    except InvalidValue:
        return None
    return Service(name, spec, endpoints)  # type: ignore[arg-type]  # no None: checked above


def _checked(raw: bytes) -> Catalog:
    """`decode_applied` by the Python checks: the reference, and the reason when a file is wrong."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidValue(f"not JSON: {str(e)[:100]}") from e
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise InvalidValue(f"not an applied-state value of format {FORMAT}")
    services = _object("services", value.get("services"))
    return Catalog(
        check_int("revision", value.get("revision"), 0, 2**63 - 1),
        tuple(_service(name, services[name]) for name in sorted(services)),
    )


def _service(name: str, value: Any) -> Service:
    item = _object(f"services.{name}", value)
    endpoints = _object(f"services.{name}.endpoints", item.get("endpoints", {}))
    # Validated as registry values are, without writing each back to JSON to read it again (issue 13).
    return Service(
        check_name("service", name),
        spec_from_value(check_object(f"services.{name}.spec", item.get("spec", {}))),
        tuple(endpoint_from_value(eid, check_object(f"services.{name}.endpoints.{eid}", endpoints[eid]))
              for eid in sorted(endpoints)),
    )


def _object(what: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValue(f"{what}: expected a JSON object")
    return value
