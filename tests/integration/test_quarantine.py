"""Quarantine against the real thing (issue 10 part 3): real etcd, `lbgen watch`, nginx and HAProxy.

Two values the registry contract accepts but one LB's checker refuses:
- an endpoint at `no-such-host.invalid` (or `fe80::1%lo`): `nginx -t` fails ("host not found in
  upstream"); HAProxy starts with that server down (`init-addr last,libc,none` in the template);
- an endpoint whose metadata an operator's HAProxy template writes as a directive argument
  (`meta.haproxy_timeout: soon`, a timeout HAProxy cannot parse); nginx's template ignores it.
  The shipped templates have no such value left: every one HAProxy refused (64 host names on one
  `use_backend` line) was fixed, so this LB node's HAProxy template adds one line that uses meta.
Each LB must hold only the service it refuses, at its last applied state, and apply everything else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from lbgen.cli import main
from tests.integration.test_cli_render import settings_for
from tests.integration.test_watcher_e2e import HAPROXY_ADDR, NGINX_ADDR, Node, serve_web, shared_etcd  # noqa: F401
from tests.support.etcd import EtcdServer
from tests.support.lb import Backend
from tests.support.lbgen_proc import ENV, lbgen_status
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

# An operator's addition to the shipped HAProxy template: a per-endpoint setting from its metadata.
META_TIMEOUT = """{% for e in s.all_endpoints if e.meta.haproxy_timeout is defined %}
    timeout server {{ e.meta.haproxy_timeout | haproxy }}
{% endfor %}
"""
BALANCE_LINE = "    balance {{ algorithms[s.balance] }}\n"


def answer(address: str, port: int, host: str = "") -> str:
    """The body answered on http://address:port/ with a Host header ("" for any error)."""
    argv = ["curl", "-fsS", "--max-time", "2", f"http://{address}:{port}/"] + (["-H", f"Host: {host}"] if host else [])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return result.stdout if result.returncode == 0 else ""


def answers(address: str, port: int, body: str, host: str = "") -> None:
    wait_until(lambda: answer(address, port, host) == body, 15, f"{address}:{port} (Host {host or '-'}) → {body!r}",
               interval=0.05)


class CheckerNode(Node):
    """The e2e LB node with `haproxy -c` not quiet (`-q` hides the reason a config is refused) and
    an HAProxy template that writes `meta.haproxy_timeout` into the backend."""

    def _settings(self, wait: str) -> dict[str, object]:
        template = self.dir / "haproxy.cfg.j2"
        source = template.read_text()
        assert BALANCE_LINE in source, "the shipped template changed: put META_TIMEOUT elsewhere"
        template.write_text(source.replace(BALANCE_LINE, BALANCE_LINE + META_TIMEOUT))
        settings = super()._settings(wait)
        for target in settings["targets"]:  # type: ignore[attr-defined]
            target["check"] = [arg for arg in target["check"] if arg != "-q" or target["name"] == "nginx"]
        return settings


@pytest.fixture
def lb_node(tmp_path: Path, shared_etcd: EtcdServer, backend: Callable[[str], Backend]) -> Iterator[Node]:
    """A started LB node (nginx + HAProxy + `lbgen watch`) serving service `web` from backend `a`."""
    made = CheckerNode(tmp_path, shared_etcd, "20ms:100ms")
    try:
        yield serve_web(made, backend)
    finally:
        made.close()


def status_check(n: Node) -> int:
    argv = [sys.executable, "-m", "lbgen", "status", "--check", "--registry", n.etcd.url, "--prefix", n.prefix]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=ENV).returncode


def test_each_lb_holds_only_the_service_its_checker_refuses_until_it_is_fixed(
        lb_node: Node, backend: Callable[[str], Backend]) -> None:
    n, api_port = lb_node, free_port()
    n.put_spec("api", listen=api_port)
    n.put_endpoint("host-a.api.1", backend("c1").port, service="api")
    answers(NGINX_ADDR, api_port, "c1")
    answers(HAPROXY_ADDR, api_port, "c1")

    mark = n.mark()
    c2 = backend("c2").port
    n.put_endpoint("host-x.web.9", 80, address="no-such-host.invalid")  # nginx -t: host not found
    n.put_endpoint("host-x.api.9", c2, service="api", meta={"haproxy_timeout": "soon"})  # haproxy -c refuses
    n.wait_log("nginx: service web quarantined at revision", since=mark)
    n.wait_log("haproxy: service api quarantined at revision", since=mark)

    n.put_endpoint("host-a.web.1", backend("b").port)  # web changes: only HAProxy takes it
    n.put_endpoint("host-a.api.1", c2, service="api")  # api changes: only nginx takes it
    answers(HAPROXY_ADDR, n.port, "b")
    answers(NGINX_ADDR, api_port, "c2")
    assert answer(NGINX_ADDR, n.port) == "a", "nginx keeps web at its last applied state"
    assert answer(HAPROXY_ADDR, api_port) == "c1", "HAProxy keeps api at its last applied state"
    assert "no-such-host" not in n.nginx_conf.read_text() and "soon" not in n.haproxy_conf.read_text()

    status = wait_until(lambda: _quarantined(n), 15, "both LB targets to publish their quarantine")
    assert "host not found in upstream" in status["nginx"]["web"], status
    assert "timeout" in status["haproxy"]["api"], status
    assert status_check(n) == 1

    mark = n.mark()
    n.delete("web", "host-x.web.9")
    n.delete("api", "host-x.api.9")
    n.wait_log("nginx: service web released from quarantine", since=mark)
    n.wait_log("haproxy: service api released from quarantine", since=mark)
    answers(NGINX_ADDR, n.port, "b")
    answers(HAPROXY_ADDR, api_port, "c2")
    wait_until(lambda: not _quarantined(n), 15, "the quarantine to leave the published status")
    log = n.log()
    for lb, service in (("nginx", "web"), ("haproxy", "api")):
        assert log.count(f"{lb}: service {service} quarantined at") == 1, log[-3000:]
        assert log.count(f"{lb}: service {service} released") == 1, log[-3000:]


def _quarantined(n: Node) -> dict[str, dict[str, str]]:
    document = lbgen_status(n.etcd.url, n.prefix)
    found = {}
    for lb in document["lb_nodes"]:
        found.update({target: t["quarantined"] for target, t in lb.get("targets", {}).items() if t["quarantined"]})
    return found if len(found) == 2 or not found else {}


def test_the_dry_run_names_the_services_it_would_quarantine_and_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "registry.yaml"
    endpoint = {"node": "host-a", "health": "healthy", "port": 8000}
    registry.write_text(yaml.safe_dump({"services": {
        "web": {"spec": {"listen": free_port()}, "endpoints": {"a": {**endpoint, "address": "127.0.0.1"}}},
        "ghost": {"spec": {"listen": free_port()}, "endpoints": {"g": {**endpoint, "address": "no-such-host.invalid"}}},
        "zone": {"spec": {"listen": free_port()}, "endpoints": {"z": {**endpoint, "address": "fe80::1%lo"}}},
    }}))
    settings = settings_for(tmp_path, f"file:{registry}", "/lbgen")
    code = main(["render", "-c", str(settings), "--dry-run", "--target", "nginx"])
    out = capsys.readouterr().out
    assert code != 0, "the full config is still refused"
    assert '--- nginx: would quarantine service ghost: [emerg] host not found in upstream "no-such-host.invalid:8000"' \
        in out, out
    assert '--- nginx: would quarantine service zone: [emerg] invalid IPv6 address in upstream' in out, out
    assert "would quarantine service web" not in out
    assert "--- nginx: with 2 service(s) held back the check passes" in out
    assert not (tmp_path / "out/nginx.conf").exists()


def test_a_checker_refusal_tied_to_no_service_keeps_the_whole_last_good_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(json.dumps({"services": {"web": {"spec": {"listen": free_port()}, "endpoints": {
        "a": {"address": "127.0.0.1", "port": 8000}}}}}))
    settings = settings_for(tmp_path, f"file:{registry}", "/lbgen",
                            vars={"pid": "/nonexistent-dir/nginx.pid", "worker_processes": "bogus"})
    code = main(["render", "-c", str(settings), "--dry-run", "--target", "nginx"])
    out = capsys.readouterr().out
    assert code != 0 and "--- nginx: check FAILED" in out
    assert "tied to no service, a watcher keeps the whole last good config" in out, out
