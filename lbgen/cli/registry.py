"""`lbgen registry`: inspect and edit registry entries (ls, get, put, rm)."""

from __future__ import annotations

import argparse

from lbgen.errors import LbgenError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `registry` sub-command."""
    parser = commands.add_parser("registry", help="inspect and edit registry entries (ls, get, put, rm)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise LbgenError("lbgen registry is not built yet")
