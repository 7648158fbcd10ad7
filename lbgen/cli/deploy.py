"""`lbgen deploy check|apply|status|rm`: launch and roll service containers from a YAML spec (docs/deploy.md)."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Iterator, TextIO

from lbgen.adapters.docker_engine import DEFAULT_HOST, DockerEngine
from lbgen.adapters.process import SystemClock
from lbgen.adapters.yaml_file import load_yaml
from lbgen.cli.common import REGISTRY_ENV, add_store_arguments, open_store, registry_prefix, registry_url
from lbgen.core.deploy_plan import Plan, plan_deploy, plan_removal
from lbgen.core.deploy_spec import LABEL_PROJECT, DeploySpec, parse_deploy_spec
from lbgen.core.schema import NAME_RE
from lbgen.errors import ConfigError, UsageError
from lbgen.ports import Clock, ContainerInfo, Docker
from lbgen.services.deployer import Deployer, Registry, ReplicaStatus, replica_status


class _Progress:
    """Progress lines with the time since the start: `[  4.1s] web.1: waiting for ...`."""

    def __init__(self, out: TextIO, clock: Clock) -> None:
        self.out, self.clock, self.started = out, clock, clock.now()

    def progress(self, subject: str, message: str) -> None:
        print(f"[{self.clock.now() - self.started:6.1f}s] {subject}: {message}", file=self.out, flush=True)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `deploy` and its `check`, `apply`, `status` and `rm` sub-commands."""
    parser = commands.add_parser("deploy")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    check_help = "validate a spec offline (no Docker, no registry) and print what it creates on an empty host"
    check = actions.add_parser("check", help=check_help, description=check_help)
    check.add_argument("spec", metavar="SPEC", help="the deploy spec (YAML)")
    check.set_defaults(run=run_check)
    apply = _action(actions, "apply", "converge the containers to the spec, rolling replicas one batch at a time")
    apply.add_argument("--dry-run", action="store_true",
                       help="print the plan against the running containers and change nothing (asks Docker; "
                       "`deploy check` needs no daemon)")
    apply.add_argument("--remove-orphans", action="store_true",
                       help="remove containers of services no longer in the spec")
    apply.set_defaults(run=run_apply)
    status = _action(actions, "status", "replicas, health, registration and the LB revisions serving them")
    status.set_defaults(run=run_status)
    rm = _action(actions, "rm", "drain and remove the project's containers (or those of SERVICE)")
    rm.add_argument("services", nargs="*", metavar="SERVICE")
    rm.set_defaults(run=run_rm)


def _action(actions: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("spec", metavar="SPEC", help="the deploy spec (YAML)")
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST", DEFAULT_HOST),
                        help="Docker daemon URL (default: $DOCKER_HOST or %(default)s)")
    add_store_arguments(parser)
    return parser


def load_spec(path: str) -> DeploySpec:
    """Read and validate a spec file; the project defaults to the file's name without extension."""
    data = load_yaml(path)
    stem = Path(path).stem
    try:
        return parse_deploy_spec(data, stem if NAME_RE.fullmatch(stem) else "default")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def _containers(docker: Docker, spec: DeploySpec) -> list[ContainerInfo]:
    return docker.list_containers(label=f"{LABEL_PROJECT}={spec.project}", include_stopped=True)


@contextmanager
def _connected(args: argparse.Namespace) -> Iterator[tuple[Docker, Registry | None]]:
    """Docker, and the registry when one is given (without, deploy waits for Docker health only).

    Both are only configured here, not contacted: a bad `--registry` fails before anything runs.
    """
    with ExitStack() as stack:
        registry = None
        if args.registry or os.environ.get(REGISTRY_ENV):
            prefix = registry_prefix(args)
            store = stack.enter_context(closing(open_store(args, registry_url(args), prefix)))
            registry = Registry(store, prefix)
        yield stack.enter_context(closing(DockerEngine(args.docker_host))), registry


def _execute(docker: Docker, registry: Registry | None, plan: Plan) -> int:
    """Run `plan`, print progress and the summary; a failed step raises its error after the summary."""
    clock = SystemClock()
    outcome = Deployer(docker, clock, registry, _Progress(sys.stdout, clock)).apply(plan)
    print("\n".join(outcome.lines()))
    if outcome.error:
        raise outcome.error
    return 0


def run_check(args: argparse.Namespace) -> int:
    """The spec's validation and its plan from nothing, without contacting anything."""
    spec = load_spec(args.spec)
    print("\n".join(plan_deploy(spec, [], remove_orphans=False).lines()))
    replicas = sum(service.replicas for service in spec.services)
    print(f"{args.spec}: valid: project {spec.project}, {len(spec.services)} service(s), {replicas} replica(s)")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    with _connected(args) as (docker, registry):
        plan = plan_deploy(spec, _containers(docker, spec), remove_orphans=args.remove_orphans)
        print("\n".join(plan.lines()), flush=True)
        if args.dry_run or not plan.changes:
            print("dry run: nothing changed" if args.dry_run else "nothing to do")
            return 0
        return _execute(docker, registry, plan)


def run_rm(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    unknown = [s for s in args.services if spec.service(s) is None]
    if unknown:
        raise UsageError(f"{args.spec}: no service {unknown[0]!r} in the spec")
    with _connected(args) as (docker, registry):
        plan = plan_removal(spec, _containers(docker, spec), only=args.services)
        print("\n".join(plan.lines()), flush=True)
        return _execute(docker, registry, plan) if plan.changes else 0


def run_status(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    with _connected(args) as (docker, registry):
        rows, lbs = replica_status(spec, _containers(docker, spec), registry)
    print("\n".join(format_status(spec, rows, lbs, registry is not None)))
    return 0


def format_status(spec: DeploySpec, rows: list[ReplicaStatus], lbs: dict[str, int], registry: bool) -> list[str]:
    """The status table, then the LB nodes and their applied revisions."""
    header = ("REPLICA", "CONTAINER", "PORT", "STATE", "HEALTH", "CONFIG", "ENDPOINT", "WEIGHT", "SERVED BY")
    table = [header] + [row.cells(registry) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [f"project {spec.project}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    if registry:
        nodes = ", ".join(f"{node} at revision {rev}" for node, rev in sorted(lbs.items()))
        lines.append(f"LB nodes: {nodes or 'none report an applied revision'}")
    return lines
