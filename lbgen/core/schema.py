"""The registry contract, version 1: key layout and value validation (docs/registry.md).

Every value is validated here when it is read, whatever wrote it (an agent, an operator with
`lbgen registry put`, a YAML file). A value that fails raises `InvalidValue` with the reason, and
never reaches a template: names, addresses and metadata may only use characters that cannot
open or close a directive in an nginx or HAProxy config.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated, Any, Callable, Literal, Mapping

import msgspec

from lbgen.core.addresses import is_hostname, normalize_address
from lbgen.core.bounded import MAX_VALUE_BYTES, load_json, quote
from lbgen.core.model import HEALTH_STATES, Endpoint
from lbgen.errors import InvalidValue

CONTRACT_VERSION = 1
DEFAULT_PREFIX = "/lbgen"

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
META_VALUE_RE = re.compile(r"[A-Za-z0-9_.:/@+=,%~-]{0,256}")
PATH_RE = re.compile(r"/[A-Za-z0-9_.~/-]{0,255}")
MAX_WEIGHT = 256
MAX_LIST = 64  # tags, hosts, meta keys: a few in practice; the bound keeps messages and renders small
MODES = ("http", "tcp")
BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "random", "source")

# One object for what most endpoints share, not one each (issue 13: 100,000 endpoints): an empty
# meta (64 bytes each), and a port number (32 bytes each above 256; a few ports in practice).
NO_META: Mapping[str, str] = {}  # read-only by its type, as Endpoint.meta; never mutated
_PORTS: dict[int, int] = {}  # filled by the watcher's follower and consumer threads: setdefault is atomic


class KeyRef(msgspec.Struct, frozen=True, gc=False):
    """What a registry key names: a service's spec, one of its endpoints, an LB node's status, a drain
    marker, or an agent's presence. A msgspec Struct: a watcher's start parses 110,000 keys, and a
    frozen dataclass cost 1 us each to build (issue 13)."""

    kind: str  # "spec" | "endpoint" | "lb" | "drain" | "agent"
    service: str = ""
    endpoint_id: str = ""
    node: str = ""

    @property
    def in_catalog(self) -> bool:
        """A service's spec or endpoint: what watchers render (status and drain keys are not)."""
        return self.kind in ("spec", "endpoint")


def normalize_prefix(prefix: str) -> str:
    """`lbgen` or `/lbgen/` → `/lbgen`; the prefix must itself be a safe path."""
    stripped = "/" + prefix.strip("/")
    if stripped != "/" and not PATH_RE.fullmatch(stripped):
        raise InvalidValue(f"prefix {prefix!r}: only letters, digits and _.~/- are allowed")
    return stripped.rstrip("/")


def registry_root(prefix: str) -> str:
    """`{prefix}/`: every key of the registry (what `status`, `registry ls` and the dashboard read)."""
    return f"{prefix}/"


def absolute_key(prefix: str, key: str) -> str:
    """`services/web/spec` → `{prefix}/services/web/spec`; an absolute key is kept as it is."""
    return key if key.startswith("/") else f"{prefix}/{key}"


def services_prefix(prefix: str) -> str:
    """The key prefix under which every service lives (with a trailing slash)."""
    return f"{prefix}/services/"


def endpoints_prefix(prefix: str, service: str) -> str:
    """`{prefix}/services/{service}/endpoints/`: every endpoint of one service."""
    return f"{prefix}/services/{check_name('service', service)}/endpoints/"


def lb_prefix(prefix: str) -> str:
    """`{prefix}/lb/`: every LB node's status."""
    return f"{prefix}/lb/"


def drain_prefix(prefix: str) -> str:
    """`{prefix}/drain/`: every drain marker."""
    return f"{prefix}/drain/"


def spec_key(prefix: str, service: str, checked: bool = True) -> str:
    """`{prefix}/services/{service}/spec`. Unchecked (the file registry), a bad name still makes a key,
    which the catalog then rejects visibly: the caller must have refused names holding a `/`."""
    return f"{prefix}/services/{check_name('service', service) if checked else service}/spec"


def endpoint_key(prefix: str, service: str, endpoint_id: str, checked: bool = True) -> str:
    """`{prefix}/services/{service}/endpoints/{endpoint_id}` (`checked` as in `spec_key`)."""
    if checked:
        check_name("service", service)
        check_name("endpoint id", endpoint_id)
    return f"{prefix}/services/{service}/endpoints/{endpoint_id}"


def drain_key(prefix: str, endpoint_id: str) -> str:
    """`{prefix}/drain/{endpoint_id}`: while it exists, the agent registers that endpoint with weight 0."""
    return f"{prefix}/drain/{check_name('endpoint id', endpoint_id)}"


def lb_status_key(prefix: str, node: str) -> str:
    """`{prefix}/lb/{node}`: where a watcher publishes what it applied."""
    return f"{prefix}/lb/{check_name('node', node)}"


def agent_key(prefix: str, node: str) -> str:
    """`{prefix}/agents/{node}`: where an agent publishes its presence, on its lease."""
    return f"{prefix}/agents/{check_name('node', node)}"


def parse_key(prefix: str, key: str) -> KeyRef | None:
    """What `key` names under `prefix`, or None for keys outside the contract (ignored)."""
    if not key.startswith(prefix + "/"):
        return None
    parts = key[len(prefix) + 1 :].split("/")
    match parts:
        case ["services", service, "spec"] if NAME_RE.fullmatch(service):
            return KeyRef("spec", service=service)
        case ["services", service, "endpoints", eid] if NAME_RE.fullmatch(service) and NAME_RE.fullmatch(eid):
            return KeyRef("endpoint", service=service, endpoint_id=eid)
        case ["lb", node] if NAME_RE.fullmatch(node):
            return KeyRef("lb", node=node)
        case ["drain", eid] if NAME_RE.fullmatch(eid):
            return KeyRef("drain", endpoint_id=eid)
        case ["agents", node] if NAME_RE.fullmatch(node):
            return KeyRef("agent", node=node)
    return None


def check_name(what: str, value: Any) -> str:
    """A service name, endpoint id, node name, tag or meta key: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidValue(f"{what} {quote(value)}: must match {NAME_RE.pattern}")
    return value


def check_address(value: Any) -> str:
    """An IPv4/IPv6 address (normalized) or an RFC 1123 host name, by `normalize_address`'s grammar."""
    address = normalize_address(value) if isinstance(value, str) else None
    if address is None:
        raise InvalidValue(f"address {quote(value)}: not an IPv4 address, IPv6 address or host name")
    return address


def check_int(what: str, value: Any, low: int, high: int) -> int:
    """An integer (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidValue(f"{what} {quote(value)}: expected an integer from {low} to {high}")
    return value


def check_choice(what: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of `choices`."""
    if value not in choices:
        raise InvalidValue(f"{what} {quote(value)}: expected one of {', '.join(choices)}")
    return choices[choices.index(value)]  # the one string, not a copy per value read (issue 13)


def check_path(what: str, value: Any) -> str:
    """A URL path: starts with `/`, letters, digits and `_.~/-` only."""
    if not isinstance(value, str) or not PATH_RE.fullmatch(value):
        raise InvalidValue(f"{what} {quote(value)}: expected a path like /api (letters, digits, _.~/-)")
    return value


def check_text(what: str, value: Any, limit: int) -> str:
    """A string of at most `limit` characters (an error message, shown but never rendered)."""
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidValue(f"{what}: expected a string of at most {limit} characters")
    return value


def check_time(what: str, value: Any) -> float | None:
    """Seconds since the epoch (a writer's wall clock), or None for null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise InvalidValue(f"{what} {quote(value)}: expected seconds since the epoch, or null")
    return float(value)


def check_object(what: str, value: Any) -> dict[str, Any]:
    """A JSON object."""
    if not isinstance(value, dict):
        raise InvalidValue(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _check_list(what: str, value: Any, check: Callable[[Any], Any]) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise InvalidValue(f"{what}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_LIST:
        raise InvalidValue(f"{what}: {len(value)} items, the limit is {MAX_LIST}")
    return tuple([check(item) for item in value]) if value else ()


def _check_meta(value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise InvalidValue(f"meta: expected an object, got {type(value).__name__}")
    if len(value) > MAX_LIST:
        raise InvalidValue(f"meta: {len(value)} keys, the limit is {MAX_LIST}")
    if not value:
        return NO_META
    for key, item in value.items():
        check_name("meta key", key)
        if not isinstance(item, str) or not META_VALUE_RE.fullmatch(item):
            raise InvalidValue(f"meta.{key} {quote(item)}: must match {META_VALUE_RE.pattern}")
    return dict(sorted(value.items()))


def load_json_object(raw: bytes | str) -> dict[str, Any]:
    """A registry value that must be a JSON object (bounded: `lbgen.core.bounded`), or `InvalidValue`."""
    value = load_json(raw)
    if not isinstance(value, dict):
        raise InvalidValue(f"expected a JSON object, got {type(value).__name__}")
    return value


def decode_endpoint(endpoint_id: str, raw: bytes | str) -> Endpoint:
    """Validate an endpoint value; unknown fields are ignored (forward compatibility).

    A plain value is decoded and checked by msgspec in C (`EndpointValue`); whatever that path
    declines goes through `endpoint_from_value`, the reference, which accepts it or says why not."""
    endpoint = _plain_endpoint(endpoint_id, raw)
    return endpoint if endpoint is not None else endpoint_from_value(endpoint_id, load_json_object(raw))


def endpoint_from_value(endpoint_id: str, value: dict[str, Any]) -> Endpoint:
    """`decode_endpoint` of a value already read from JSON."""
    for required in ("address", "port"):
        if required not in value:
            raise InvalidValue(f"missing field {required!r}")
    container = value.get("container", "")
    if not isinstance(container, str) or (container and not NAME_RE.fullmatch(container)):
        raise InvalidValue(f"container {quote(container)}: must match {NAME_RE.pattern}")
    node = value.get("node", "")
    return Endpoint(
        id=check_name("endpoint id", endpoint_id),
        address=check_address(value["address"]),
        port=check_int("port", value["port"], 1, 65535),
        weight=check_int("weight", value.get("weight", 1), 0, MAX_WEIGHT),
        node=sys.intern(check_name("node", node)) if node else "",  # a few hosts, thousands of endpoints
        container=container,
        health=check_choice("health", value.get("health", "none"), HEALTH_STATES),
        tags=_check_list("tags", value.get("tags", []), lambda t: check_name("tag", t)),
        meta=_check_meta(value.get("meta", {})),
    )


# msgspec searches for a pattern: anchored by \A and \Z, which is fullmatch ($ would allow a final newline)
_NameText = Annotated[str, msgspec.Meta(pattern=rf"\A(?:{NAME_RE.pattern})\Z")]
_NameOrEmpty = Annotated[str, msgspec.Meta(pattern=rf"\A(?:{NAME_RE.pattern})?\Z")]
_MetaText = Annotated[str, msgspec.Meta(pattern=rf"\A(?:{META_VALUE_RE.pattern})\Z")]


class EndpointValue(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The rules of `endpoint_from_value` that msgspec checks in C as it decodes (issue 13): a valid
    value decodes and validates in about 2 us instead of 5; the address is checked after, in Python.

    Unknown fields are refused here (the reference ignores them): every field read is then typed
    and bounded, so no value this path takes can be too deep, too long, badly encoded or hold a
    number `json.loads` refuses, the bounded reader's rejections; only its size needs a look."""

    address: str
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    weight: Annotated[int, msgspec.Meta(ge=0, le=MAX_WEIGHT)] = 1
    node: _NameOrEmpty = ""
    container: _NameOrEmpty = ""
    health: Literal[HEALTH_STATES] = "none"  # type: ignore[valid-type]
    tags: Annotated[tuple[_NameText, ...], msgspec.Meta(max_length=MAX_LIST)] = ()
    meta: Annotated[dict[_NameText, _MetaText], msgspec.Meta(max_length=MAX_LIST)] = {}


_ENDPOINT_VALUE = msgspec.json.Decoder(EndpointValue)


def _plain_endpoint(endpoint_id: str, raw: bytes | str) -> Endpoint | None:
    """The endpoint in `raw` when it is plainly valid (bytes, every rule of `EndpointValue` and the
    address met, no unknown field), else None: the reference decides, and says why not."""
    if not isinstance(raw, bytes) or len(raw) > MAX_VALUE_BYTES:
        return None
    try:
        value = _ENDPOINT_VALUE.decode(raw)
    except msgspec.DecodeError:  # and its ValidationError
        return None
    return endpoint_from_typed(endpoint_id, value)


def endpoint_from_typed(endpoint_id: str, value: EndpointValue) -> Endpoint | None:
    """The endpoint `value` (decoded as an `EndpointValue`) describes, or None when its address or
    `endpoint_id` breaks the rules (the caller then asks `endpoint_from_value` why)."""
    address = normalize_address(value.address)
    if address is None or not NAME_RE.fullmatch(endpoint_id):
        return None
    meta = dict(sorted(value.meta.items())) if len(value.meta) > 1 else value.meta or NO_META
    port = _PORTS.setdefault(value.port, value.port) if len(_PORTS) < 1024 else value.port
    return Endpoint(endpoint_id, address, port, value.weight, sys.intern(value.node), value.container,
                    value.health, value.tags, meta)


def encode_endpoint(endpoint: Endpoint) -> bytes:
    """The JSON value stored for `endpoint` (compact, keys sorted: equal endpoints encode equal)."""
    return json.dumps(endpoint.to_dict(), sort_keys=True, separators=(",", ":")).encode()


_SPEC_FIELDS: Mapping[str, Callable[[Any], Any]] = {
    "listen": lambda v: check_int("listen", v, 1, 65535),
    "hosts": lambda v: list(_check_list("hosts", v, _check_server_name)),
    "path": lambda v: check_path("path", v),
    "mode": lambda v: check_choice("mode", v, MODES),
    "balance": lambda v: check_choice("balance", v, BALANCE_ALGORITHMS),
    "health_check": lambda v: check_path("health_check", v),
}


def _check_server_name(value: Any) -> str:
    if not isinstance(value, str) or not is_hostname(value, allow_wildcard=True):
        raise InvalidValue(f"host {quote(value)}: not a host name (a leading *. is allowed)")
    return value


def decode_spec(raw: bytes | str) -> dict[str, Any]:
    """Validate a service spec. Only known fields are kept, so nothing unchecked reaches a template."""
    return spec_from_value(load_json_object(raw))


def spec_from_value(value: dict[str, Any]) -> dict[str, Any]:
    """`decode_spec` of a value already read from JSON."""
    return {name: check(value[name]) for name, check in _SPEC_FIELDS.items() if name in value}


def encode_drain_marker(container_id: str, endpoint_key: str) -> bytes:
    """The value of a drain marker: who asked (a deploy) and for which container and endpoint key.
    Agents read only the key's presence; the value is for an operator reading the registry."""
    return json.dumps({"container": container_id, "endpoint": endpoint_key, "by": "lbgen deploy"}).encode()


def encode_spec(spec: Mapping[str, Any]) -> bytes:
    """The JSON value stored for a service spec."""
    return json.dumps(dict(spec), sort_keys=True, separators=(",", ":")).encode()
