"""The deploy ↔ LB drain handshake end to end (issue 10 part 9), all real and all on loopback: etcd,
a private dockerd, `lbgen agent`, and two LB nodes, nginx and HAProxy, each kept by its own
`lbgen watch` process that publishes the revision it applied under `{prefix}/lb/{node}`.

The user's story: a rolling update under load through both LBs fails no request, because deploy
stops an old replica only after both nodes applied its weight-0 drain (then `drain: 1s` covers
the requests in flight; before the handshake a fixed 3 s drain stood in for it). With one node's
watcher frozen (SIGSTOP), a scale-down waits for it up to `drain_timeout` and names it.
"""

from __future__ import annotations

import http.client
import re
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from lbgen.core.model import Catalog, Service
from lbgen.core.render import render
from lbgen.core.schema import encode_spec, spec_key
from lbgen.core.settings import Target
from lbgen.ports import Store
from lbgen.services.deploy_registry import Registry
from tests.integration.test_deploy import Deploy, etcd_store  # noqa: F401
from tests.support.lb import ConfFor, Lb
from tests.support.lbgen_proc import LbgenProcess, LbgenProcesses, lbgen_processes  # noqa: F401
from tests.support.util import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Both LBs listen on the spec's one port, each on its own loopback address.
ADDRESS = {"nginx": "127.0.0.1", "haproxy": "127.0.0.2"}

# A replica whose answers take 300 ms (a CGI script of busybox httpd), so a replica stopped before it
# is drained cuts requests in flight. POST: nginx never retries it on another upstream, and HAProxy
# retries only failed connects, so a cut request surfaces as a failure instead of being hidden.
SLOW = ("mkdir -p /www/cgi-bin && printf '%s\\n' '#!/bin/sh' 'read -r body' 'sleep 0.3' "
        "'printf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nreplica version=%s port=%s\\\\n\" \"$VERSION\" \"$PORT\"' "
        "> /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow && exec /bin/sh /entrypoint.sh")


def post(host: str, port: int) -> str:
    """One slow POST through the LB at `host:port`: the replica's answer (`replica version=N port=P`),
    or what went wrong."""
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("POST", "/cgi-bin/slow", body=b"n=1\n")
        response = connection.getresponse()
        body = response.read().decode().strip()
    except (OSError, http.client.HTTPException) as e:
        return f"error {type(e).__name__}"
    finally:
        connection.close()
    return body if response.status == 200 else f"status {response.status}"


class Load:
    """Slow POSTs through one LB until the `with` ends, by `clients` threads, a new connection each."""

    def __init__(self, host: str, port: int, clients: int = 3) -> None:
        self.host, self.port, self.done, self.lock = host, port, threading.Event(), threading.Lock()
        self.counts: dict[str, int] = {}
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self) -> None:
        while not self.done.wait(0.01):
            answer = post(self.host, self.port)
            outcome = answer.split()[1] if answer.startswith("replica ") else answer
            with self.lock:
                self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def failures(self) -> dict[str, int]:
        with self.lock:
            return {what: n for what, n in self.counts.items() if not what.startswith("version=")}


@dataclass
class LbNode:
    """One LB node: the LB, its `lbgen watch` process and the node name it publishes under."""

    kind: str
    lb: Lb
    watch: LbgenProcess
    node: str

    @property
    def address(self) -> str:
        return ADDRESS[self.kind]


def _target(kind: str, lb_dir: Path, listen_address: str) -> dict[str, Any]:
    """The watcher's target for the LB in `lb_dir`: the shipped template, every path in that dir."""
    if kind == "nginx":
        facts: dict[str, Any] = {"pid": str(lb_dir / "nginx.pid"), "access_log": "off", "temp_dir": str(lb_dir),
                                 "error_log": str(lb_dir / "error.log"), "worker_processes": 1}
    else:
        facts = {"pid": str(lb_dir / "haproxy.pid"), "master_socket": str(lb_dir / "master.sock")}
    conf = "nginx.conf" if kind == "nginx" else "haproxy.cfg"
    return {"name": kind, "kind": kind, "template": str(ROOT / "templates" / f"{conf}.j2"), "dest": str(lb_dir / conf),
            "timeout": "10s", "vars": {**facts, "listen_address": listen_address}}


def _first_config(kind: str) -> ConfFor:
    """The LB's config before its watcher runs: the shipped template, listening on the fixture's port."""
    def conf(lb_dir: Path, port: int) -> str:
        target = Target(**{**_target(kind, lb_dir, "127.0.0.1"), "timeout": 10.0})
        return render(Path(target.template).read_text(), Catalog(0, (Service("web", {"listen": port}),)), target)
    return conf


class Fleet:
    """The LB nodes and the agent of one test, all `lbgen` processes on the test's etcd prefix."""

    def __init__(self, request: pytest.FixtureRequest, processes: LbgenProcesses, deploy: Deploy) -> None:
        self.request, self.processes, self.deploy = request, processes, deploy
        self.registry = ["--registry", deploy.etcd_url, "--prefix", deploy.prefix]
        self.port = 0
        self.nodes: dict[str, LbNode] = {}

    def start_agent(self) -> None:
        self.processes.start("agent", "agent", *self.registry, "--node", f"host{uuid.uuid4().hex[:6]}",
                             "--host-ip", "127.0.0.1", "--docker-host", self.deploy.docker_host, "--ttl", "5",
                             "--metrics-addr", "off")

    def start_lb(self, kind: str, status_ttl: int = 60) -> LbNode:
        """Start `kind` on the fixture's port, then its watcher, rendering `web` on the fleet's port."""
        lb = self.request.getfixturevalue(f"{kind}_lb")(_first_config(kind))
        if not self.port:
            self.port = lb.port
            self.deploy.store.put(spec_key(self.deploy.prefix, "web"), encode_spec({"listen": self.port}))
        settings = lb.dir / "lbgen.yaml"
        settings.write_text(yaml.safe_dump({"registry": "file:/unused", "wait": "50ms:300ms", "guard": "off",
                                            "targets": [_target(kind, lb.dir, ADDRESS[kind])]}))
        node = f"lb-{kind}"
        watch = self.processes.start(f"watch-{kind}", "watch", "-c", str(settings), *self.registry, "--node", node,
                                     "--status-ttl", str(status_ttl), "--metrics-addr", "off")
        self.nodes[kind] = LbNode(kind, lb, watch, node)
        return self.nodes[kind]

    def revisions(self) -> dict[str, int]:
        return Registry(self.deploy.store, self.deploy.prefix).lb_revisions()

    def in_sync(self) -> bool:
        """Every node reports, and has applied the latest write under `services/` that is still there."""
        items = self.deploy.store.snapshot(f"{self.deploy.prefix}/services/").items
        latest = max((kv.mod_revision for kv in items), default=0)
        revisions = self.revisions()
        return set(revisions) == {n.node for n in self.nodes.values()} and min(revisions.values()) >= latest

    def serving(self, replicas: int) -> bool:
        """Each LB spreads requests over `replicas` distinct replicas (answers carry the port)."""
        return all(len({post(n.address, self.port) for _ in range(4 * replicas)}) == replicas
                   for n in self.nodes.values())


@pytest.fixture
def deploy(tmp_path: Path, docker_host: str, etcd_server: Any, etcd_prefix: str, test_image: str,
           capsys: pytest.CaptureFixture[str], etcd_store: Store) -> Iterator[Deploy]:  # noqa: F811
    run = Deploy(tmp_path, docker_host, etcd_server.url, etcd_prefix, test_image, capsys, etcd_store)
    yield run
    run.clean()


@pytest.fixture
def fleet(request: pytest.FixtureRequest, lbgen_processes: LbgenProcesses, deploy: Deploy) -> Fleet:  # noqa: F811
    """The real agent and both LB nodes (nginx, HAProxy) with their watchers, serving 3 slow replicas."""
    running = Fleet(request, lbgen_processes, deploy)
    running.start_agent()
    running.start_lb("nginx")
    running.start_lb("haproxy")
    wait_until(lambda: set(running.revisions()) == {"lb-nginx", "lb-haproxy"}, 60, "both LB nodes reporting")
    deploy.write(command=["/bin/sh", "-c", SLOW], update={"drain": "1s"})
    code, out = deploy.cli("apply")
    assert code == 0, f"{out}\n{lbgen_processes.logs()}"
    assert out.count("2 LB node(s) applied revision") == 3, out  # each new replica waited for both
    wait_until(lambda: running.in_sync() and running.serving(3), 60, "both LBs serving 3 replicas")
    return running


def _logs_on_failure(fleet: Fleet) -> Callable[[str], str]:
    return lambda out: f"{out}\n{fleet.processes.logs()}"


def test_rolling_update_through_both_lbs_fails_no_request(fleet: Fleet, deploy: Deploy) -> None:
    explain = _logs_on_failure(fleet)
    deploy.write(command=["/bin/sh", "-c", SLOW], env={"VERSION": "2"}, update={"drain": "1s"})
    with Load(ADDRESS["nginx"], fleet.port) as nginx, Load(ADDRESS["haproxy"], fleet.port) as haproxy:
        code, out = deploy.cli("apply")
        for load in (nginx, haproxy):
            wait_until(lambda current=load: current.counts.get("version=2", 0) >= 5, 60, "load answered by version 2")
    print(f"nginx {nginx.counts}; haproxy {haproxy.counts}")
    assert code == 0 and "3 recreated" in out, explain(out)
    # every old replica was stopped only after both nodes applied its drain (no warning, no blind drain)
    assert out.count("waiting for the LB nodes to apply the drain") == 3, explain(out)
    assert out.count("2 LB node(s) applied revision") == 6 and "warning" not in out, explain(out)
    assert nginx.counts.get("version=1", 0) >= 5 and haproxy.counts.get("version=1", 0) >= 5, (nginx.counts, haproxy.counts)
    assert (nginx.failures(), haproxy.failures()) == ({}, {}), explain(out)


def test_a_frozen_watcher_is_waited_for_and_named_before_the_stop(fleet: Fleet, deploy: Deploy) -> None:
    explain, frozen = _logs_on_failure(fleet), fleet.nodes["haproxy"]
    frozen.watch.proc.send_signal(signal.SIGSTOP)  # its status stays (TTL 60 s) but no longer moves
    try:
        deploy.write(replicas=2, command=["/bin/sh", "-c", SLOW], update={"drain": "1s", "drain_timeout": "5s"})
        code, out = deploy.cli("apply")
    finally:
        frozen.watch.proc.send_signal(signal.SIGCONT)
    assert code == 0 and "1 removed" in out, explain(out)
    web3 = [line for line in out.splitlines() if " web.3: " in line]
    warning = next((line for line in web3 if "warning" in line), "")
    named = re.search(r"did not apply revision (\d+) \(the drain\) in time: lb-haproxy at revision (\d+); "
                      r"stopping anyway after 5s$", warning)
    assert named and int(named[2]) < int(named[1]), explain(out)
    assert "lb-nginx" not in warning, warning  # the node that applied the drain is not blamed
    stopping = next(i for i, line in enumerate(web3) if "stopping" in line and "SIGTERM" in line)
    assert web3.index(warning) < stopping, web3
    assert sorted(c.labels["lbgen.deploy.replica"] for c in deploy.containers()) == ["1", "2"]
    wait_until(lambda: fleet.in_sync() and fleet.serving(2), 60, "the thawed watcher catching up")
