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
from lbgen.core.deploy_hosts import DockerHost
from lbgen.core.deploy_plan import DeployPlan, plan_deploy, plan_removal
from lbgen.core.deploy_spec import LABEL_PROJECT, DeploySpec, parse_deploy_spec
from lbgen.core.schema import NAME_RE
from lbgen.errors import ConfigError, DockerError, UsageError
from lbgen.core.values import ContainerInfo
from lbgen.ports import Clock, Docker
from lbgen.services.deploy_registry import Registry
from lbgen.services.deploy_status import ReplicaStatus, replica_status
from lbgen.services.deployer import Deployer
from lbgen.services.host_docker import HostDocker

Dockers = dict[str, Docker]


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
    status = _action(actions, "status", "replicas (per host), health, registration and the LB revisions serving them")
    status.set_defaults(run=run_status)
    rm = _action(actions, "rm", "drain and remove the project's containers (or those of SERVICE)")
    rm.add_argument("services", nargs="*", metavar="SERVICE")
    rm.set_defaults(run=run_rm)


def _action(actions: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("spec", metavar="SPEC", help="the deploy spec (YAML)")
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST", DEFAULT_HOST),
                        help="Docker daemon URL (default: $DOCKER_HOST or %(default)s); "
                        "not used by a spec with hosts:, which names its daemons")
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


def _listed(docker: Docker, spec: DeploySpec) -> list[ContainerInfo]:
    return docker.list_containers(label=f"{LABEL_PROJECT}={spec.project}", include_stopped=True)


def _containers(dockers: Dockers, spec: DeploySpec) -> tuple[dict[str, list[ContainerInfo]], dict[str, str]]:
    """The project's containers per reachable host, and why each other host is unreachable.

    An unreachable host stops the run unless the spec says `on_host_error: continue` (and another
    host answers): the error names the host."""
    found, unreachable, errors = {}, {}, []
    for name, docker in dockers.items():
        try:
            found[name] = _listed(docker, spec)
        except DockerError as e:
            unreachable[name] = str(e)
            errors.append(e)
    if errors and (spec.on_host_error == "stop" or not found):
        policy = "on_host_error: stop" if spec.on_host_error == "stop" else "no host answers"
        raise DockerError(f"{errors[0]} ({policy}; nothing was changed)") from errors[0]
    for why in unreachable.values():
        print(f"warning: {why} (on_host_error: continue: going on with the other hosts)", flush=True)
    return found, unreachable


def _engine(host: DockerHost, default_url: str) -> Docker:
    if not host.name:
        return DockerEngine(default_url)
    tls = (host.tls.ca, host.tls.cert, host.tls.key) if host.tls else None
    return HostDocker(host, DockerEngine(host.url, tls=tls))


@contextmanager
def _connected(args: argparse.Namespace, spec: DeploySpec) -> Iterator[tuple[Dockers, Registry | None]]:
    """Each host's Docker, and the registry when one is given (without, deploy waits for Docker
    health only). Both are only configured here, not contacted: a bad `--registry` fails before
    anything runs."""
    with ExitStack() as stack:
        registry = None
        if args.registry or os.environ.get(REGISTRY_ENV):
            prefix = registry_prefix(args)
            store = stack.enter_context(closing(open_store(args, registry_url(args), prefix)))
            registry = Registry(store, prefix)
        dockers = {h.name: stack.enter_context(closing(_engine(h, args.docker_host))) for h in spec.all_hosts}
        yield dockers, registry


def _execute(dockers: Dockers, registry: Registry | None, plan: DeployPlan, spec: DeploySpec,
             unreachable: dict[str, str]) -> int:
    """Run `plan`, print progress and the summary; a failed step raises its error after the summary,
    and hosts left out (`on_host_error: continue`) make the exit non-zero after the others ran."""
    clock = SystemClock()
    reachable = {name: docker for name, docker in dockers.items() if name not in unreachable}
    deployer = Deployer(reachable, clock, registry, _Progress(sys.stdout, clock), hosts=spec.hosts)
    outcome = deployer.apply(plan)
    print("\n".join(outcome.lines()))
    if outcome.error:
        raise outcome.error
    return _left_out(unreachable)


def _left_out(unreachable: dict[str, str]) -> int:
    """0, or the error for hosts `on_host_error: continue` left out: the run did not converge them."""
    if unreachable:
        raise DockerError(f"{len(unreachable)} host(s) left out, unreachable: {', '.join(sorted(unreachable))}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """The spec's validation and its plan from nothing, without contacting anything."""
    spec = load_spec(args.spec)
    print("\n".join(plan_deploy(spec, {h.name: [] for h in spec.all_hosts}).lines()))
    replicas = sum(service.replicas for service in spec.services)
    where = ""
    if spec.hosts:
        per_host = {h.name: sum(s.placement.get(h.name, 0) for s in spec.services) for h in spec.hosts}
        where = f" on {len(spec.hosts)} host(s): " + ", ".join(f"{name} {n}" for name, n in per_host.items())
    print(f"{args.spec}: valid: project {spec.project}, {len(spec.services)} service(s), {replicas} replica(s){where}")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    with _connected(args, spec) as (dockers, registry):
        containers, unreachable = _containers(dockers, spec)
        plan = plan_deploy(spec, containers, remove_orphans=args.remove_orphans, unreachable=unreachable)
        print("\n".join(plan.lines()), flush=True)
        if args.dry_run or not plan.changes:
            print("dry run: nothing changed" if args.dry_run else "nothing to do")
            return _left_out(unreachable)
        return _execute(dockers, registry, plan, spec, unreachable)


def run_rm(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    unknown = [s for s in args.services if spec.service(s) is None]
    if unknown:
        raise UsageError(f"{args.spec}: no service {unknown[0]!r} in the spec")
    with _connected(args, spec) as (dockers, registry):
        containers, unreachable = _containers(dockers, spec)
        plan = plan_removal(spec, containers, only=args.services)
        print("\n".join(plan.lines()), flush=True)
        return _execute(dockers, registry, plan, spec, unreachable) if plan.changes else _left_out(unreachable)


def run_status(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    with _connected(args, spec) as (dockers, registry):
        containers, unreachable = _containers(dockers, spec)
        rows, lbs = replica_status(spec, containers, registry)
    print("\n".join(format_status(spec, rows, lbs, registry is not None, unreachable)))
    return 1 if unreachable else 0


def format_status(spec: DeploySpec, rows: list[ReplicaStatus], lbs: dict[str, int], registry: bool,
                  unreachable: dict[str, str] | None = None) -> list[str]:
    """The status table (grouped by host when the spec has hosts), then the LB nodes' revisions."""
    header = ("REPLICA", "CONTAINER", "PORT", "STATE", "HEALTH", "CONFIG", "ENDPOINT", "WEIGHT", "SERVED BY")
    table = [header] + [row.cells(registry) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [f"project {spec.project}"]
    lines.append("  ".join(cell.ljust(w) for cell, w in zip(header, widths)).rstrip())
    for host in spec.all_hosts:
        if host.name:
            lines.append(_host_line(host, [r for r in rows if r.host == host.name], (unreachable or {}).get(host.name)))
        cells = [row.cells(registry) for row in rows if row.host == host.name]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells]
    if registry:
        nodes = ", ".join(f"{node} at revision {rev}" for node, rev in sorted(lbs.items()))
        lines.append(f"LB nodes: {nodes or 'none report an applied revision'}")
    return lines


def _host_line(host: DockerHost, rows: list[ReplicaStatus], unreachable: str | None) -> str:
    """`host host-a (unix://...), agent host-a at 127.0.0.2: 2 replicas, 2 healthy` (or unreachable)."""
    head = f"{host.label}, agent {host.node} at {host.address}"
    if unreachable:
        return f"{head}: UNREACHABLE: {unreachable}"
    healthy = sum(1 for r in rows if r.deployed and r.deployed.healthy)
    return f"{head}: {sum(1 for r in rows if r.deployed)} replica(s), {healthy} healthy"
