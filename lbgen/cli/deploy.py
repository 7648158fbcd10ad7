"""`lbgen deploy`: launch and roll service containers from a YAML spec."""

from __future__ import annotations

import argparse

from lbgen.errors import LbgenError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `deploy` sub-command."""
    parser = commands.add_parser("deploy", help="launch and roll service containers from a YAML spec")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise LbgenError("lbgen deploy is not built yet")
