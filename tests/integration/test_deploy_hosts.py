"""`lbgen deploy` across two Docker hosts, each with its own dockerd and `lbgen agent`.

The user's story: a spec names host-a (127.0.0.2) and host-b (127.0.0.3); `apply` spreads four
replicas over both, each bound to its host's address and registered by its host's agent; LB node
lb-nginx (127.0.0.1) and lb-haproxy (127.0.0.4), each rendered by its own `lbgen watch`, serve
all four; a rolling update under load through both LBs fails no request; `status` shows the
replicas per host; `rm` removes them from both. A stopped dockerd is an error naming its host: with `on_host_error: stop`
nothing changes, with `continue` the other host is updated and the exit is still non-zero.
"""

from __future__ import annotations

import http.client
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from lbgen.cli import main
from tests.integration.test_deploy import FAST
from tests.integration.test_deploy_handshake import Load
from tests.integration.test_scenarios import Host, LbNode, hosts, running_fleet  # noqa: F401
from tests.support.etcd import EtcdServer
from tests.support.lbgen_proc import LbgenProcesses, lbgen_processes  # noqa: F401
from tests.support.util import free_block, wait_until

pytestmark = pytest.mark.integration

# A CGI answering in 300 ms with its version and the address it is bound to (as SLOW in test_deploy).
SLOW = ("mkdir -p /www/cgi-bin && printf '%s\\n' '#!/bin/sh' 'read -r body' 'sleep 0.3' "
        "'printf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nreplica version=%s@%s\\\\n\" \"$VERSION\" \"$BIND\"' "
        "> /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow && exec /bin/sh /entrypoint.sh")
CHECK = {"cmd": "wget -q -O /dev/null http://$BIND:$PORT/health", "interval": "1s", "timeout": "5s", "retries": 3}


class MultiDeploy:
    """One project over the fleet's two hosts: writes the spec, runs the CLI."""

    def __init__(self, path: Path, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        self.path, self.fleet, self.capsys = path, fleet, capsys
        self.project, self.base = f"mh{uuid.uuid4().hex[:8]}", free_block(8)

    def write(self, version: str, on_host_error: str = "stop", drain: str = "1s") -> None:
        hosts = {h.node: {"docker": h.daemon.url, "address": h.ip, "bind": h.ip} for h in self.fleet["hosts"].values()}
        web = {"image": self.fleet["hosts"]["host-a"].daemon.image, "replicas": 4,
               "ports": f"{self.base}-{self.base + 7}", "env": {"VERSION": version},
               "command": ["/bin/sh", "-c", SLOW], "healthcheck": CHECK, "update": {**FAST, "drain": drain}}
        spec = {"project": self.project, "hosts": hosts, "on_host_error": on_host_error, "services": {"web": web}}
        self.path.write_text(yaml.safe_dump(spec, sort_keys=False))

    def cli(self, action: str) -> tuple[int, str]:
        code = main(["deploy", action, str(self.path), "--registry", self.fleet["registry"],
                     "--prefix", self.fleet["prefix"]])
        captured = self.capsys.readouterr()
        return code, captured.out + captured.err

    def running(self, host: Host) -> dict[str, dict[str, str]]:
        """Name → env of this project's running containers on `host`."""
        found = host.client.containers.list(filters={"label": f"lbgen.deploy.project={self.project}"})
        return {c.name: dict(e.split("=", 1) for e in c.attrs["Config"]["Env"]) for c in found}


@pytest.fixture
def multi(tmp_path: Path, etcd_server: EtcdServer, etcd_prefix: str, hosts: dict[str, Host],  # noqa: F811
          lbgen_processes: LbgenProcesses, capsys: pytest.CaptureFixture[str]) -> Iterator[MultiDeploy]:  # noqa: F811
    with running_fleet(tmp_path, etcd_server, etcd_prefix, hosts, lbgen_processes, replicas=False) as fleet:
        for lb in fleet["lbs"].values():  # a watcher whose LB is not running applies nothing (issue 10.5)
            lb.start_lb()
        try:
            yield MultiDeploy(tmp_path / "fleet.yaml", fleet, capsys)
        except (AssertionError, TimeoutError) as e:
            raise AssertionError(f"{e}\n{fleet['logs']()[-6000:]}") from e


def _answers(lb: LbNode, rounds: int = 16) -> set[str]:
    """`version=N@bind` of the replicas answering through `lb`."""
    seen = set()
    for _ in range(rounds):
        connection = http.client.HTTPConnection(lb.listen, lb.port, timeout=5)
        try:
            connection.request("POST", "/cgi-bin/slow", body=b"n=1\n")
            response = connection.getresponse()
            seen.add(response.read().decode().split()[1] if response.status == 200 else f"status {response.status}")
        except (OSError, http.client.HTTPException, IndexError):
            pass
        finally:
            connection.close()
    return seen


def test_rolling_update_across_two_hosts_under_load_through_both_lbs(multi: MultiDeploy) -> None:
    hosts, lbs = multi.fleet["hosts"], multi.fleet["lbs"]
    multi.write("1")
    code, out = multi.cli("apply")
    assert code == 0, out
    assert "web.1@host-a" in out and "web.2@host-b" in out
    for name, host in hosts.items():
        envs = multi.running(host)
        assert len(envs) == 2 and {env["BIND"] for env in envs.values()} == {host.ip}, (name, envs)
    both = {"version=1@127.0.0.2", "version=1@127.0.0.3"}
    for lb in lbs.values():
        wait_until(lambda: _answers(lb) == both, 30, f"{lb.node} to serve both hosts")

    code, out = multi.cli("status")
    assert code == 0, out
    assert "host host-a (unix://" in out and ", agent host-a at 127.0.0.2: 2 replica(s), 2 healthy" in out
    assert ", agent host-b at 127.0.0.3: 2 replica(s), 2 healthy" in out

    multi.write("2")
    v2 = {"version=2@127.0.0.2", "version=2@127.0.0.3"}
    with Load(lbs["lb-nginx"].listen, lbs["lb-nginx"].port) as nginx, \
            Load(lbs["lb-haproxy"].listen, lbs["lb-haproxy"].port) as haproxy:
        code, out = multi.cli("apply")
        for load in (nginx, haproxy):
            wait_until(lambda: v2 <= set(load.counts), 30, "load answered by version 2 on both hosts")
    print(f"through nginx {nginx.counts}; through HAProxy {haproxy.counts}")
    assert code == 0, out
    assert "4 recreated" in out
    for load in (nginx, haproxy):
        assert load.failures() == {} and set(load.counts) <= both | v2, load.counts
        assert sum(load.counts.get(v, 0) for v in both) >= 4, load.counts
    assert out.index("web.2@host-b: registered") < out.index("web.2@host-b: stopping")
    assert {env["VERSION"] for host in hosts.values() for env in multi.running(host).values()} == {"2"}

    code, out = multi.cli("rm")
    assert code == 0, out
    assert all(multi.running(host) == {} for host in hosts.values())


def test_an_unreachable_host_is_named_and_the_policy_is_honoured(multi: MultiDeploy) -> None:
    hosts = multi.fleet["hosts"]
    multi.write("1", drain="0s")
    assert multi.cli("apply")[0] == 0
    before = multi.running(hosts["host-a"])
    hosts["host-b"].daemon.stop()

    multi.write("2", on_host_error="stop", drain="0s")
    code, out = multi.cli("apply")
    assert code == 4, out
    assert out.strip().splitlines()[-1].startswith(f"Error: host host-b ({hosts['host-b'].daemon.url}): ")
    assert "(on_host_error: stop; nothing was changed)" in out
    assert multi.running(hosts["host-a"]) == before

    multi.write("2", on_host_error="continue", drain="0s")
    code, out = multi.cli("apply")
    assert code == 4, out
    assert f"warning: host host-b ({hosts['host-b'].daemon.url}): " in out
    assert "skipped   web.2@host-b" in out and "2 recreated" in out
    assert out.strip().splitlines()[-1] == "Error: 1 host(s) left out, unreachable: host-b"
    assert {env["VERSION"] for env in multi.running(hosts["host-a"]).values()} == {"2"}
