"""`lbgen registry ls|get|put|rm`: inspect and fix registry entries, on etcd or the YAML file.

`put` validates the value against the registry contract before writing, so an operator cannot
write what every watcher would reject. KEY is absolute (`/lbgen/services/web/spec`) or relative
to the prefix (`services/web/spec`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, TypeVar

from lbgen.cli.common import add_store_arguments, open_store, registry_prefix, registry_url
from lbgen.core.bounded import load_json
from lbgen.core.catalog import Rejected, catalog_from_snapshot
from lbgen.core.lb_node_status import decode_lb_status
from lbgen.core.model import Endpoint, Service
from lbgen.core.schema import absolute_key, decode_endpoint, decode_spec, parse_key, registry_root
from lbgen.errors import InvalidValue, LbgenError, UsageError
from lbgen.core.values import Snapshot
from lbgen.ports import Store

T = TypeVar("T")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `registry` and its `ls`, `get`, `put`, `rm` sub-commands."""
    parser = commands.add_parser("registry")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    ls = actions.add_parser("ls", help="list services and endpoints, flagging rejected values and why")
    ls.add_argument("service", nargs="?", help="only this service")
    get = actions.add_parser("get", help="print the raw value of a key")
    get.add_argument("key")
    put = actions.add_parser("put", help="validate a JSON value against the contract, then write it")
    put.add_argument("key")
    put.add_argument("value", help="a JSON object, or - to read it from stdin")
    rm = actions.add_parser("rm", help="delete a key under the prefix (also a rejected one, to clean it up)")
    rm.add_argument("key")
    for action, run in ((ls, run_ls), (get, run_get), (put, run_put), (rm, run_rm)):
        add_store_arguments(action)
        action.set_defaults(run=run)


def _use(args: argparse.Namespace, prefix: str, action: Callable[[Store], T], create: bool = False) -> tuple[T, str]:
    """`action(store)` on the registry the options name, closing the store after; also returns
    the registry's name for messages."""
    url = registry_url(args)
    store = open_store(args, url, prefix, create=create)
    try:
        return action(store), str(url)
    finally:
        store.close()


def full_key(prefix: str, key: str) -> str:
    """`services/web/spec` → `/lbgen/services/web/spec`; absolute keys are kept as they are."""
    return absolute_key(prefix, key)


def run_ls(args: argparse.Namespace) -> int:
    prefix = registry_prefix(args)
    snapshot, where = _use(args, prefix, lambda store: store.snapshot(registry_root(prefix)))
    catalog, rejected = catalog_from_snapshot(prefix, snapshot)
    services = [s for s in catalog.services if args.service in (None, s.name)]
    rejected = [r for r in rejected if args.service is None or _service_of(prefix, r.key) == args.service]
    if args.service and not services and not rejected:
        raise LbgenError(f"no service {args.service!r} in {where} under {prefix}")
    endpoints = sum(len(s.all_endpoints) for s in services)
    print(f"{where} {prefix} at revision {snapshot.revision}: {len(services)} services, "
          f"{endpoints} endpoints, {len(rejected)} rejected")
    for service in services:
        _print_service(service)
    _print_rejected(rejected)
    if args.service is None:
        _print_lb_nodes(prefix, snapshot)
    return 0


def _service_of(prefix: str, key: str) -> str | None:
    ref = parse_key(prefix, key)
    return ref.service if ref else None


def _print_service(service: Service) -> None:
    spec = " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in service.spec.items())
    print(f"{service.name}  {spec or '(no spec)'}")
    for endpoint in service.all_endpoints:
        print(f"  {endpoint.id}  {_hostport(endpoint)}  weight={endpoint.weight}  health={endpoint.health}"
              f"  node={endpoint.node or '-'}  {_status(endpoint)}")


def _hostport(endpoint: Endpoint) -> str:
    return f"[{endpoint.address}]:{endpoint.port}" if ":" in endpoint.address else f"{endpoint.address}:{endpoint.port}"


def _status(endpoint: Endpoint) -> str:
    if endpoint.is_served():
        return "served"
    return "drained (weight 0)" if endpoint.weight == 0 else f"not served ({endpoint.health})"


def _print_rejected(rejected: list[Rejected]) -> None:
    if rejected:
        print("rejected (never rendered):")
    for item in rejected:
        print(f"  {item.key}  {item.reason}")


def _print_lb_nodes(prefix: str, snapshot: Snapshot) -> None:
    nodes = [(ref.node, kv.value) for kv in snapshot.items if (ref := parse_key(prefix, kv.key)) and ref.kind == "lb"]
    if nodes:
        print("load balancers:")
    for node, value in nodes:
        try:
            decode_lb_status(node, value)
        except InvalidValue as e:
            print(f"  {node}  invalid status: {e}")
        else:
            print(f"  {node}  {value.decode()}")


def run_get(args: argparse.Namespace) -> int:
    prefix = registry_prefix(args)
    key = full_key(prefix, args.key)
    kv, where = _use(args, prefix, lambda store: store.get(key))
    if kv is None:
        raise LbgenError(f"{key}: no such key in {where}")
    print(kv.value.decode(errors="replace"))
    ref = parse_key(prefix, key)
    if ref is not None and ref.in_catalog:  # only catalog entries are validated by watchers
        try:
            check_value(prefix, key, kv.value)
        except UsageError as e:
            print(f"warning: watchers reject this value: {e}", file=sys.stderr)
    return 0


def check_value(prefix: str, key: str, raw: bytes) -> dict[str, Any]:
    """The JSON object `raw`, if it is a valid value for `key` under the contract; else `UsageError`."""
    ref = parse_key(prefix, key)
    if ref is None or not ref.in_catalog:
        raise UsageError(f"{key}: not a registry entry; expected {prefix}/services/SERVICE/spec "
                         f"or {prefix}/services/SERVICE/endpoints/ID")
    try:
        if ref.kind == "spec":
            decode_spec(raw)
        else:
            decode_endpoint(ref.endpoint_id, raw)
    except InvalidValue as e:
        raise UsageError(f"{key}: {e}") from e
    return dict(load_json(raw))


def run_put(args: argparse.Namespace) -> int:
    raw = (sys.stdin.read() if args.value == "-" else args.value).encode()
    prefix = registry_prefix(args)
    key = full_key(prefix, args.key)
    value = check_value(prefix, key, raw)  # before connecting: a bad value never needs the registry
    encoded = json.dumps(value, separators=(",", ":")).encode()
    revision, where = _use(args, prefix, lambda store: store.put(key, encoded), create=True)
    print(f"put {key} in {where} at revision {revision}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    prefix = registry_prefix(args)
    key = full_key(prefix, args.key)
    if not key.startswith(registry_root(prefix)):  # the same bound as put: lbgen's keys only
        raise UsageError(f"{key}: outside the prefix {prefix}: registry rm only deletes keys under it "
                         "(--prefix chooses another)")
    existed, where = _use(args, prefix, lambda store: store.delete(key))
    if not existed:
        raise LbgenError(f"{key}: no such key in {where}")
    print(f"deleted {key} from {where}")
    return 0
