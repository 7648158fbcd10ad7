"""The `lbgen` command: the only place where concrete adapters are wired to the services."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from lbgen import __version__
from lbgen.cli import agent, dashboard, deploy, registry, render, status, watch
from lbgen.errors import LbgenError

COMMANDS = (agent, watch, render, deploy, registry, status, dashboard)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="lbgen",
        description="Load-balancer config generator: Docker hosts register in etcd, LB nodes render "
        "validated Nginx/HAProxy configs from it and hot-reload.",
    )
    parser.add_argument("--version", action="version", version=f"lbgen {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the chosen command, map `LbgenError` to `Error: ...` and its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args) or 0)
    except LbgenError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
