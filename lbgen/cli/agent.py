"""`lbgen agent`: register this Docker host's containers in etcd on a lease."""

from __future__ import annotations

import argparse

from lbgen.errors import LbgenError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `agent` sub-command."""
    parser = commands.add_parser("agent", help="register this Docker host's containers in etcd on a lease")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise LbgenError("lbgen agent is not built yet")
