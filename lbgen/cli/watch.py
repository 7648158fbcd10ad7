"""`lbgen watch`: watch the registry and keep LB configs rendered, validated and reloaded."""

from __future__ import annotations

import argparse

from lbgen.errors import LbgenError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `watch` sub-command."""
    parser = commands.add_parser("watch", help="watch the registry and keep LB configs rendered, validated and reloaded")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise LbgenError("lbgen watch is not built yet")
