"""`lbgen agent`: register this Docker host's containers in etcd on a lease (docs/agent.md)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from contextlib import ExitStack

from prometheus_client import CollectorRegistry

from lbgen.adapters.docker_engine import DEFAULT_HOST, DockerEngine
from lbgen.adapters.http_server import start_http_server
from lbgen.cli.common import add_store_arguments, bounded_number, open_store, registry_prefix, registry_url
from lbgen.core.discovery import DiscoveryOptions
from lbgen.core.web import parse_listen_address
from lbgen.errors import InvalidValue, UsageError
from lbgen.services.agent import Agent, AgentConfig
from lbgen.services.metrics import Health, metrics_routes

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `agent` sub-command."""
    parser = commands.add_parser(
        "agent",
        description="Keep this host's endpoints in etcd equal to its running, labelled containers. "
        "Keys hang on one lease: if the host or the agent dies they expire within the TTL.",
    )
    add_store_arguments(parser)
    add = parser.add_argument
    add("--etcd", dest="registry", metavar="URL[,URL...]", help="the same as --registry")
    add("--node", required=True, help="this host's name, unique in the fleet (endpoint ids start with it)")
    add("--host-ip", required=True, metavar="IP",
        help="address for ports published on 0.0.0.0 and for host-network containers")
    add("--ttl", type=bounded_number(int, 2, 3600), default=15, metavar="SECONDS", help="lease TTL (default 15)")
    add("--resync", type=bounded_number(float, 1, 86400), default=60.0, metavar="SECONDS",
        help="full re-list and re-read interval, each wait drawn within ±20%% of it; "
        "writes only differences (default 60)")
    add("--docker-host", default=os.environ.get("DOCKER_HOST", DEFAULT_HOST), metavar="URL",
        help=f"Docker daemon (default $DOCKER_HOST or {DEFAULT_HOST})")
    add("--all", action="store_true",
        help="register every container with a published or exposed port, not only labelled ones")
    add("--internal", default="", metavar="NETWORK",
        help="containers attached to NETWORK register their own IP there instead of the host's")
    add("--keep-on-exit", action="store_true",
        help="on SIGTERM leave the keys: they expire within the TTL unless a restarted agent takes them over")
    add("--metrics-addr", default="127.0.0.1:9101", metavar="IP:PORT",
        help="Prometheus /metrics and /healthz (default 127.0.0.1:9101; 'off' disables)")
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace, prefix: str) -> AgentConfig:
    """The agent's configuration; a bad node name, IP or network is a usage error."""
    try:
        options = DiscoveryOptions(
            node=args.node, host_ip=args.host_ip, register_all=args.all, internal_network=args.internal
        )
    except InvalidValue as e:
        raise UsageError(str(e)) from e
    return AgentConfig(prefix, options, ttl=args.ttl, resync_interval=args.resync, keep_on_exit=args.keep_on_exit)


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM or SIGINT; then revoke the lease unless `--keep-on-exit`."""
    url, prefix = registry_url(args), registry_prefix(args)
    config = config_from_args(args, prefix)
    metrics_addr = parse_listen_address(args.metrics_addr)
    registry = CollectorRegistry()
    health = Health("docker", "etcd")
    with ExitStack() as stack:
        store = open_store(args, url, prefix)
        stack.callback(store.close)
        docker = DockerEngine(args.docker_host)
        stack.callback(docker.close)
        agent = Agent(store, docker, config, registry=registry, health=health)
        if metrics_addr is not None:
            server = start_http_server(metrics_addr, metrics_routes(registry, health.problems), "metrics address")
            stack.callback(server.close)
        _stop_on_signals(agent)
        agent.run()
    log.info("agent %s stopped", config.options.node)
    return 0


def _stop_on_signals(agent: Agent) -> None:
    """SIGTERM/SIGINT stop the agent from a fresh thread: a handler must not take the queue's lock,
    which the interrupted main thread may be holding."""

    def handle(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        threading.Thread(target=agent.stop, name="agent-stop", daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
