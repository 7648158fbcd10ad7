"""The `lbgen` command: the only place where concrete adapters are wired to the services."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterator, Sequence

from lbgen import __version__
from lbgen.cli import agent, dashboard, deploy, registry, render, status, watch
from lbgen.cli.logs import add_logging_arguments, configure_logging
from lbgen.errors import LbgenError

COMMANDS = (agent, watch, render, deploy, registry, status, dashboard)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered. The logging options are taken
    anywhere (`lbgen watch --log-level DEBUG`), and a command named without its action (or a
    bare `lbgen`) prints its help."""
    parser = argparse.ArgumentParser(
        prog="lbgen",
        description="Load-balancer config generator: Docker hosts register in etcd, LB nodes render "
        "validated Nginx/HAProxy configs from it and hot-reload.",
        epilog="`lbgen COMMAND --help` lists a command's options. Exit status: 0 ok, 1 template or "
        "other error, 2 usage or settings, 3 registry, 4 Docker, 5 apply, 6 deploy.",
    )
    parser.add_argument("--version", action="version", version=f"lbgen {__version__}")
    add_logging_arguments(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    for sub in _subparsers(parser):
        add_logging_arguments(sub, top=False)
    for with_actions in (parser, *_subparsers(parser)):
        if any(isinstance(a, argparse._SubParsersAction) for a in with_actions._actions):
            with_actions.set_defaults(run=_help_of(with_actions))
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every sub-command's parser, at any depth (`registry`, `registry ls`, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub
                yield from _subparsers(sub)


def _help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return show_help


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the chosen command, map `LbgenError` to `Error: ...` and its exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        return int(args.run(args) or 0)
    except LbgenError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
