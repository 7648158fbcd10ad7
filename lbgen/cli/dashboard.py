"""`lbgen dashboard`: a read-only page of the whole fleet, live from the registry (docs/dashboard.md)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from contextlib import ExitStack
from pathlib import Path

from lbgen.adapters.http_server import start_http_server
from lbgen.cli.common import add_store_arguments, bounded_number, open_store, registry_prefix, registry_url
from lbgen.core.web import ListenAddress, parse_listen_address
from lbgen.errors import UsageError
from lbgen.services.dashboard.feed import FleetFeed
from lbgen.services.dashboard.hub import Hub
from lbgen.services.dashboard.routes import SECURITY_HEADERS, dashboard_routes

log = logging.getLogger(__name__)

TOKEN_ENV = "LBGEN_DASHBOARD_TOKEN"
DEFAULT_LISTEN = "127.0.0.1:9200"
REFRESH = 5.0  # seconds between pushes of the document when nothing changed (its ages keep counting)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `dashboard` sub-command."""
    parser = commands.add_parser(
        "dashboard",
        description="Serve a page showing every service and endpoint, agent, LB node (applied "
        "revision, lag, errors), quarantined service, rejected value and recent change, updated "
        "live from the registry watch (server-sent events). /api/status serves the same document as "
        "`lbgen status --json`. Read-only; loopback by default. Runs until SIGTERM or SIGINT.")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="IP:PORT",
                        help=f"where to serve the page (default {DEFAULT_LISTEN})")
    parser.add_argument("--token", help=f"require this token for the data (prefer --token-file or ${TOKEN_ENV}: "
                        "argv is visible in ps); browsers open http://HOST:PORT/?token=TOKEN")
    parser.add_argument("--token-file", type=Path, metavar="FILE", help="read the token from FILE")
    parser.add_argument("--max-clients", type=bounded_number(int, 1, 1000), default=32, metavar="N",
                        help="open pages (event streams) served at once (default 32)")
    add_store_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    listen = _listen_address(args.listen)
    token = _token(args)
    if not token and not listen.loopback:
        log.warning("dashboard on %s without a token: anyone who reaches it can read the fleet", listen)
    url, prefix = registry_url(args), registry_prefix(args)
    stopping = threading.Event()
    with ExitStack() as stack:
        store = open_store(args, url, prefix)
        stack.callback(store.close)
        hub = Hub(max_clients=int(args.max_clients))
        feed = FleetFeed(store, prefix, str(url), hub, expect_lbs=url.kind != "file")
        server = start_http_server(listen, dashboard_routes(feed, hub, token), "dashboard address", SECURITY_HEADERS)
        stack.callback(server.close)
        stack.callback(hub.close)  # ends the open event streams before the server closes
        follower = threading.Thread(target=feed.run, name="registry-follower", daemon=True)
        follower.start()
        stack.callback(follower.join, 5)
        stack.callback(feed.stop)
        _stop_on_signals(stopping)
        log.info("dashboard of %s under %s on http://%s%s", url, prefix, server.address,
                 " (token required)" if token else "")
        while not stopping.wait(REFRESH):
            feed.refresh()
    return 0


def _listen_address(text: str) -> ListenAddress:
    address = parse_listen_address(text, "--listen")
    if address is None:
        raise UsageError(f"--listen {text!r}: the dashboard needs an address (IP:PORT)")
    return address


def _token(args: argparse.Namespace) -> str | None:
    """The token from --token, else --token-file, else $LBGEN_DASHBOARD_TOKEN; None: no token."""
    if args.token is not None and args.token_file is not None:
        raise UsageError("--token and --token-file: give one of them")
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--token-file {str(args.token_file)[:100]}: {e}") from e
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise UsageError("the dashboard token is empty (--token, --token-file or $" + TOKEN_ENV + ")")
    return token.strip() if token else None


def _stop_on_signals(stopping: threading.Event) -> None:
    """SIGTERM/SIGINT stop the dashboard from a fresh thread: a handler must not take the event's
    lock, which the interrupted main thread may be holding."""

    def handle(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        threading.Thread(target=stopping.set, name="dashboard-stop", daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
