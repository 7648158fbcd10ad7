"""What every registry-using command shares: the `--registry` options and opening the store."""

from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

from lbgen.core.registry_url import FORMS, RegistryUrl, parse_registry_url
from lbgen.core.schema import DEFAULT_PREFIX, normalize_prefix
from lbgen.errors import InvalidValue, UsageError
from lbgen.ports import Store

PASSWORD_ENV = "LBGEN_ETCD_PASSWORD"
REGISTRY_ENV = "LBGEN_REGISTRY"
PREFIX_ENV = "LBGEN_PREFIX"
DEFAULT_ETCD_TIMEOUT = 5.0


def add_store_arguments(parser: argparse.ArgumentParser, settings: bool = False) -> None:
    """`--registry`, `--prefix` and etcd's TLS and auth options. `settings`: the command reads a
    settings file, whose `registry` and `prefix` are the last defaults (only `render` and `watch`)."""
    group = parser.add_argument_group("registry")
    then = ", then the settings file" if settings else ""
    group.add_argument("--registry", metavar="URL", help=f"{FORMS} (default: ${REGISTRY_ENV}{then})")
    group.add_argument("--prefix", help=f"key prefix (default: ${PREFIX_ENV}{then}, else {DEFAULT_PREFIX})")
    group.add_argument("--ca", dest="tls_ca", metavar="FILE", help="CA certificate to verify etcd (implies TLS)")
    group.add_argument("--cert", dest="tls_cert", metavar="FILE", help="client certificate for etcd (with --key)")
    group.add_argument("--key", dest="tls_key", metavar="FILE", help="client private key for etcd (with --cert)")
    group.add_argument("--user", help="etcd user name (password: --password or $" + PASSWORD_ENV + ")")
    group.add_argument("--password", help=f"etcd password (prefer ${PASSWORD_ENV}: argv is visible in ps)")
    group.add_argument("--etcd-timeout", type=bounded_number(float, 0.1, 600), metavar="SECONDS",
                       help="deadline of each etcd call and of each connect to etcd "
                       f"(default: {DEFAULT_ETCD_TIMEOUT:g})")


def registry_url(args: argparse.Namespace, fallback: RegistryUrl | str | Sequence[str] | None = None) -> RegistryUrl:
    """The registry from `--registry`, else `$LBGEN_REGISTRY`, else `fallback` (settings)."""
    value = args.registry or os.environ.get(REGISTRY_ENV) or fallback
    if isinstance(value, RegistryUrl):
        return value
    if not value:
        raise UsageError(f"no registry: pass --registry ({FORMS}) or set ${REGISTRY_ENV}")
    return parse_registry_url(value)


def registry_prefix(args: argparse.Namespace, fallback: str | None = None) -> str:
    """The key prefix from `--prefix`, else `$LBGEN_PREFIX`, else `fallback`, else `/lbgen`."""
    value = args.prefix or os.environ.get(PREFIX_ENV) or fallback or DEFAULT_PREFIX
    try:
        return normalize_prefix(value)
    except InvalidValue as e:
        raise UsageError(f"--prefix: {e}") from e


def open_store(args: argparse.Namespace, url: RegistryUrl, prefix: str, create: bool = False) -> Store:
    """The adapter for `url`. `create`: a file registry that does not exist yet starts empty."""
    options = {"--ca": args.tls_ca, "--cert": args.tls_cert, "--key": args.tls_key, "--user": args.user}
    etcd_only = [name for name, value in options.items() if value]
    if url.kind == "file":
        if etcd_only:
            raise UsageError(f"{', '.join(etcd_only)}: only for an etcd registry, not {url}")
        from lbgen.adapters.file_store import FileStore  # and each adapter only for its own registry kind

        return FileStore(url.path, prefix=prefix, must_exist=not create)
    password = args.password or os.environ.get(PASSWORD_ENV)
    if args.user and not password:
        raise UsageError(f"--user {args.user}: needs --password or ${PASSWORD_ENV}")
    # grpc (~80 ms to import) only for an etcd registry: a file registry starts like a small tool.
    from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
    return EtcdStore(EtcdConfig(
        endpoints=url.endpoints, tls=url.tls, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key,
        user=args.user, password=password if args.user else None, timeout=args.etcd_timeout or DEFAULT_ETCD_TIMEOUT,
    ))


def bounded_number(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of `kind` within [low, high]."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be from {low} to {high}")
        return value

    return parse
