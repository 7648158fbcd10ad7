"""The `lbgen` command: the only place where concrete adapters are wired to the services.

A command's module (and with it grpc, docker, jinja2, prometheus_client) is imported only when that
command runs: `lbgen --help` and a one-shot `lbgen render` start like a small tool (issue 13)."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from typing import Any, Callable, Iterator, Sequence

from lbgen import __version__
from lbgen.cli.logs import add_logging_arguments, configure_logging
from lbgen.errors import LbgenError

ONE_SHOT_GC_THRESHOLD = 50_000  # see main(); a command says it is one-shot with set_defaults(one_shot=True)

# Sub-command → (the module whose `register(commands)` defines its parser, its line in `lbgen --help`).
COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("lbgen.cli.agent", "register this Docker host's containers in etcd on a lease"),
    "watch": ("lbgen.cli.watch", "watch the registry and keep LB configs rendered, validated and reloaded"),
    "render": ("lbgen.cli.render",
               "render, validate and apply once (--dry-run: print the diff and the checker's verdict)"),
    "deploy": ("lbgen.cli.deploy", "launch and roll service containers from a YAML spec"),
    "registry": ("lbgen.cli.registry", "inspect and edit registry entries (ls, get, put, rm)"),
    "status": ("lbgen.cli.status", "services, endpoints, agents and LB nodes at a glance, with what is wrong"),
    "dashboard": ("lbgen.cli.dashboard", "a read-only web page of the whole fleet, live from the registry"),
}


class LazyCommands(argparse._SubParsersAction):
    """Sub-commands listed (name and help) up front, each parser defined by importing its module
    only when the command is chosen on the command line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (_module, help_text) in COMMANDS.items():
            self._choices_actions.append(self._ChoicesPseudoAction(name, (), help_text))
            self._name_parser_map[name] = None

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A command module's parser replaces its placeholder; its help line is the table's."""
        if name in COMMANDS:
            self._name_parser_map.pop(name, None)
        return super().add_parser(name, **kwargs)

    def load(self, name: str) -> argparse.ArgumentParser:
        """The parser of `name`, importing and registering its module the first time."""
        parser = self._name_parser_map.get(name)
        if parser is None and name in COMMANDS:
            importlib.import_module(COMMANDS[name][0]).register(self)
            parser = self._name_parser_map[name]
            _finish(parser)
        if parser is None:
            raise KeyError(name)  # not a command: argparse reports the invalid choice before this
        return parser

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each sub-command's own parser is built when it is chosen. The logging
    options are taken anywhere (`lbgen watch --log-level DEBUG`), and a command named without its
    action (or a bare `lbgen`) prints its help."""
    parser = argparse.ArgumentParser(
        prog="lbgen",
        description="Load-balancer config generator: Docker hosts register in etcd, LB nodes render "
        "validated Nginx/HAProxy configs from it and hot-reload.",
        epilog="`lbgen COMMAND --help` lists a command's options. Exit status: 0 ok, 1 template or "
        "other error, 2 usage or settings, 3 registry, 4 Docker, 5 apply, 6 deploy, 7 render refused by "
        "the drop guard.",
    )
    parser.add_argument("--version", action="version", version=f"lbgen {__version__}")
    add_logging_arguments(parser, top=True)
    parser.add_subparsers(dest="command", metavar="COMMAND", action=LazyCommands)
    parser.set_defaults(run=_help_of(parser))
    return parser


def _finish(command: argparse.ArgumentParser) -> None:
    """Give a freshly defined command (and its actions) the logging options, and the help as the
    default run of every parser that has actions."""
    for sub in (command, *_subparsers(command)):
        add_logging_arguments(sub, top=False)
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            sub.set_defaults(run=_help_of(sub))


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every sub-command's parser, at any depth (`registry ls`, ...)."""
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
    if argv is None:
        # A real process (a caller such as a test passes argv): the command's modules are
        # imported now and live as long as it does; moved out of the cyclic collector's
        # generations, later collections need not walk them again (issue 13: ~25 ms of CPU of a
        # one-shot render of 2,000 endpoints, bench/startup_bench.py).
        gc.freeze()
        if getattr(args, "one_shot", False):
            # Most of what a one-shot command makes lives until it exits: the young generation is
            # collected every ONE_SHOT_GC_THRESHOLD allocations instead of 700 (issue 13: ~10 ms of
            # a one-shot render of 2,000 endpoints). Cyclic garbage stays collected, later.
            gc.set_threshold(ONE_SHOT_GC_THRESHOLD, *gc.get_threshold()[1:])
    configure_logging(args.log_level, args.log_format)
    try:
        return int(args.run(args) or 0)
    except LbgenError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
