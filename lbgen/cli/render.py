"""`lbgen render`: render, validate and apply once (or --dry-run: diff and checker verdict only)."""

from __future__ import annotations

import argparse

from lbgen.errors import LbgenError


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `render` sub-command."""
    parser = commands.add_parser("render", help="render, validate and apply once (or --dry-run: diff and checker verdict only)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise LbgenError("lbgen render is not built yet")
