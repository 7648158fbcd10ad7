"""`lbgen watch`: keep every target rendered from the registry, validated, swapped in and reloaded."""

from __future__ import annotations

import argparse
import logging
import signal
from contextlib import ExitStack
import socket
from pathlib import Path
from types import FrameType
from typing import Callable

from msgspec.structs import replace

from lbgen.adapters.applied_state import AppliedStateFiles
from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.adapters.file_watch import FileWatch
from lbgen.adapters.files import LocalFiles
from lbgen.adapters.heap import HeapTrimmer, keep_heap_small
from lbgen.adapters.http_server import start_http_server
from lbgen.adapters.process import SystemClock
from lbgen.cli.common import bounded_number, registry_prefix
from lbgen.cli.lb_node import (
    add_settings_arguments,
    build_applier,
    chosen_targets,
    load_settings,
    open_registry,
)
from lbgen.adapters.template_file import read_template
from lbgen.core.schema import check_name
from lbgen.core.settings import Settings, Target
from lbgen.core.web import parse_listen_address
from lbgen.errors import InvalidValue, UsageError
from lbgen.services.status_publisher import StatusPublisher
from lbgen.services.metrics import metrics_routes
from lbgen.services.watcher import Watcher, WatcherStatus

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `watch` sub-command."""
    parser = commands.add_parser(
        "watch",
        description="Snapshot the registry, watch it, and after each quiet period render every "
        "target, validate it with the LB's checker, swap it in atomically and reload, restoring "
        "the last good config on any failure. Runs until SIGTERM or SIGINT; SIGHUP re-reads the "
        "settings file and the templates (a broken file keeps the running settings).")
    add_settings_arguments(parser)
    parser.add_argument("--metrics-addr", default="127.0.0.1:9102", metavar="IP:PORT",
                        help="Prometheus /metrics and /healthz (default 127.0.0.1:9102; 'off' disables)")
    parser.add_argument("--node", default=socket.gethostname(),
                        help="this LB node's name: its status is published under {prefix}/lb/NODE "
                        "(default: the host name)")
    parser.add_argument("--status-ttl", type=bounded_number(int, 2, 3600), default=15, metavar="SECONDS",
                        help="lease TTL of the published status: how long a dead node's status stays (default 15)")
    parser.set_defaults(run=run)


def _templates_touched(watcher: Watcher, touched: set[str]) -> None:
    """Tells the watcher when one of its template files changed on disk (from the file watch's thread)."""
    ours = touched & _template_paths(watcher.settings.targets)  # as of the last SIGHUP
    if ours:
        log.info("template changed on disk: %s", ", ".join(sorted(ours)))
        watcher.templates_changed()


def _template_paths(targets: tuple[Target, ...]) -> set[str]:
    return {str(Path(t.template).resolve()) for t in targets}


def run(args: argparse.Namespace) -> int:
    keep_heap_small()  # before any thread starts: its arena count is set when it first allocates
    settings = load_settings(args.config)
    targets = chosen_targets(settings, args.target)
    for target in targets:
        read_template(target.template)  # a missing template is a start-up error, not a retry loop
    node = _node_name(args.node)
    store, settings = open_registry(args, settings)
    settings = replace(settings, targets=targets)
    _remove_stale_staged(targets)
    publisher = StatusPublisher(store, settings.prefix, node, [t.name for t in targets], ttl=args.status_ttl)
    watcher = Watcher(settings, store, build_applier(), SystemClock(), read_template=read_template,
                      on_status=releasing_heap(publisher.update, HeapTrimmer()), renderer=BoundedRenderer(),
                      load_settings=lambda: _reload_settings(args), states=AppliedStateFiles())
    with ExitStack() as stack:
        stack.callback(store.close)
        metrics_addr = parse_listen_address(args.metrics_addr)
        if metrics_addr is not None:
            routes = metrics_routes(watcher.metrics.registry, watcher.problems)
            server = start_http_server(metrics_addr, routes, "metrics address")
            stack.callback(server.close)
        directories = {str(Path(p).parent) for p in _template_paths(targets)}
        observer = FileWatch(directories, lambda touched: _templates_touched(watcher, touched), name="templates")
        stack.callback(observer.stop)
        _stop_on_signals(watcher)
        log.info("LB node %s watching %s under %s for %s", node, args.registry or settings.registry,
                 settings.prefix, ", ".join(t.name for t in targets))
        publisher.start()
        stack.callback(publisher.stop)
        watcher.run()
    return 0


def releasing_heap(update: Callable[[WatcherStatus], None],
                   trim: Callable[[bool], bool]) -> Callable[[WatcherStatus], None]:
    """The watcher's status hook, which also hands the heap its passes freed back to the OS
    (issue 13; `lbgen.adapters.heap`) when a newer revision was applied: the first time at once,
    with a cycle collection (the start-up load is over), then as often as `trim` allows."""
    applied = [0]

    def hook(status: WatcherStatus) -> None:
        if status.applied_revision != applied[0] and trim(not applied[0]):
            applied[0] = status.applied_revision
        update(status)

    return hook


def _node_name(name: str) -> str:
    try:
        return check_name("--node", name)
    except InvalidValue as e:
        raise UsageError(str(e)) from e


def _reload_settings(args: argparse.Namespace) -> Settings:
    """SIGHUP: the settings file again, with the same `--target` and `--prefix` choices as at start."""
    settings = load_settings(args.config)
    targets = chosen_targets(settings, args.target)
    for target in targets:
        read_template(target.template)  # a missing template refuses the reload, as it refuses a start
    return replace(settings, targets=targets, prefix=registry_prefix(args, fallback=settings.prefix))


def _remove_stale_staged(targets: tuple[Target, ...]) -> None:
    """Staged files a watcher killed between stage and commit left beside its own dests."""
    files = LocalFiles()
    for target in targets:
        for path in files.remove_stale(target):
            log.warning("%s: removed stale staged file %s", target.name, path)


def _stop_on_signals(watcher: Watcher) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        watcher.stop()

    def reload(signum: int, frame: FrameType | None) -> None:
        log.info("signal SIGHUP: re-reading the settings and templates")
        watcher.reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
