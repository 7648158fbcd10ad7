"""Wiring shared by `lbgen render` and `lbgen watch`: settings, registry, templates, applier."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import msgspec
from msgspec.structs import replace

from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.adapters.files import LocalFiles
from lbgen.adapters.kinds import control_for, runtime_for
from lbgen.adapters.process import SubprocessRunner, SystemClock
from lbgen.adapters.template_file import read_template
from lbgen.adapters.yaml_file import load_yaml
from lbgen.cli.common import add_store_arguments, open_store, registry_prefix, registry_url
from lbgen.core.catalog import Rejected
from lbgen.core.model import Catalog
from lbgen.core.settings import Settings, Target, parse_settings
from lbgen.errors import ConfigError, LbgenError, UsageError
from lbgen.ports import Clock, Store
from lbgen.services.applier import Applier

log = logging.getLogger(__name__)

DEFAULT_SETTINGS = "lbgen.yaml"


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """`-c/--config`, `--target` and the registry options (which override the settings file)."""
    parser.add_argument("-c", "--config", default=DEFAULT_SETTINGS, metavar="FILE",
                        help=f"settings file (default: ./{DEFAULT_SETTINGS})")
    parser.add_argument("--target", action="append", metavar="NAME",
                        help="only this target (repeatable; default: every target)")
    add_store_arguments(parser, settings=True)


def load_settings(path: str) -> Settings:
    """Read and validate the settings file; relative paths in it resolve against its directory."""
    data = load_yaml(path)
    try:
        return parse_settings(data, str(Path(path).resolve().parent))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def chosen_targets(settings: Settings, names: Sequence[str] | None) -> tuple[Target, ...]:
    """The targets named by `--target` (all when none); an unknown name is a usage error."""
    if not names:
        return settings.targets
    known = {t.name: t for t in settings.targets}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--target {unknown[0]}: no such target (settings have: {', '.join(known)})")
    return tuple(known[n] for n in names)


def open_registry(args: argparse.Namespace, settings: Settings) -> tuple[Store, Settings]:
    """The store the settings (or `--registry`/`--prefix`) name; etcd TLS/auth from flags, then settings."""
    etcd = settings.etcd
    args.tls_ca = args.tls_ca or etcd.ca
    args.tls_cert = args.tls_cert or etcd.cert
    args.tls_key = args.tls_key or etcd.key
    args.user = args.user or etcd.user
    args.etcd_timeout = args.etcd_timeout or etcd.timeout
    if etcd.password_file and not args.password:
        args.password = _read_secret(etcd.password_file)
    url = registry_url(args, fallback=settings.registry)
    prefix = registry_prefix(args, fallback=settings.prefix)
    return open_store(args, url, prefix), replace(settings, prefix=prefix)


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"etcd.password_file {path}: {e.strerror or e}") from e


def build_applier(clock: Clock | None = None) -> Applier:
    """The applier on the real filesystem and processes."""
    clock = clock or SystemClock()
    return Applier(LocalFiles(), SubprocessRunner(), controls=lambda target: control_for(target, clock),
                   runtimes=lambda target: runtime_for(target, clock))


class Rendered(msgspec.Struct, frozen=True):
    """One-shot render results: the texts that rendered, and an error line per target that did not."""

    texts: dict[str, str]
    errors: dict[str, str]


def one_shot_renderer() -> BoundedRenderer:
    """The renderer of a command that renders once, its worker forked already (`fork_ahead`): it
    imports the renderer while the command reads the registry. `close()` it."""
    renderer = BoundedRenderer(fragments=False)  # one render per target: nothing would reuse a fragment
    renderer.fork_ahead()
    return renderer


def render_targets(settings: Settings, targets: Sequence[Target], catalog: Catalog,
                   renderer: BoundedRenderer) -> Rendered:
    """Render every target from `catalog`, each bounded by its `render_timeout` and `render_memory`;
    a failing template does not stop the others."""
    texts: dict[str, str] = {}
    errors: dict[str, str] = {}
    for target in targets:
        try:
            texts[target.name] = renderer.render(read_template(target.template), catalog, target,
                                                 settings.served_health)
        except LbgenError as e:
            errors[target.name] = str(e)
    return Rendered(texts, errors)


def log_rejected(rejected: Sequence[Rejected], revision: int) -> None:
    """One warning line per registry value that failed validation."""
    for item in rejected:
        log.warning("registry: skipping %s at revision %s: %s", item.key, revision, item.reason)
