"""The monitoring kit against the real thing: Debian's Prometheus scrapes a real `lbgen watch` (on a
private etcd) and a real `lbgen agent` (on the session's dockerd), all on 127.0.0.1, and evaluates
monitoring/prometheus/lbgen.rules.yml. The recording rules and alerts must see the series as lbgen
really exports them (labels, joins), not only the hand-written ones of the promtool tests."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from tests.support.etcd import EtcdFactory, require_binary
from tests.support.lbgen_proc import LbgenProcesses, lbgen_processes  # noqa: F401
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "monitoring/prometheus/lbgen.rules.yml"
PREFIX = "/lbgen"


class Prometheus:
    """A Prometheus server on a loopback port with its own data dir; `query` and `alerts` use its API."""

    def __init__(self, directory: Path, jobs: dict[str, str]) -> None:
        require_binary("prometheus", "prometheus (Debian package prometheus)")
        self.port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(RULES)],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                     for job, target in jobs.items()]}
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT)

    def _get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["data"]

    def query(self, expr: str) -> dict[str, float]:
        """`expr` now, as {the labels other than the name, job and instance, joined: value}."""
        def key(metric: dict[str, str]) -> str:
            return ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in ("__name__", "job", "instance"))
        try:
            return {key(r["metric"]): float(r["value"][1]) for r in self._get("query", query=expr)["result"]}
        except OSError:
            return {}  # not listening yet

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """Pending and firing alerts called `name`."""
        try:
            return [a for a in self._get("alerts")["alerts"] if a["labels"]["alertname"] == name]
        except OSError:
            return []

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(jobs: dict[str, str]) -> Prometheus:
        started.append(Prometheus(tmp_path, jobs))
        return started[-1]

    yield start
    for server in started:
        server.close()


def seed(port: int) -> None:
    """Service `web` with one healthy endpoint, service `empty` with none."""
    store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", port),)))
    try:
        store.put(f"{PREFIX}/services/web/spec", b'{"listen": 18080}')
        store.put(f"{PREFIX}/services/web/endpoints/host-a.web-1.80",
                  b'{"address": "127.0.0.1", "port": 18081, "node": "host-a", "health": "healthy"}')
        store.put(f"{PREFIX}/services/empty/spec", b'{"listen": 18090}')
    finally:
        store.close()


def watch_settings(directory: Path) -> Path:
    """One generic target: a list of services, checked by `test -s` on the candidate."""
    (directory / "services.j2").write_text("{% for s in services %}{{ s.name }}\n{% endfor %}")
    target = {"name": "conf", "template": str(directory / "services.j2"), "dest": str(directory / "services.txt"),
              "check": ["test", "-s", "{staged}"]}
    path = directory / "lbgen.yaml"
    path.write_text(yaml.safe_dump({"registry": "file:/unused", "wait": "50ms:300ms", "guard": "off",
                                    "targets": [target]}))
    return path


def test_rules_see_a_real_watcher_and_agent(
    tmp_path: Path, etcd_factory: EtcdFactory, docker_host: str, lbgen_processes: LbgenProcesses,  # noqa: F811
    prometheus_factory: Any,
) -> None:
    etcd = etcd_factory()
    seed(etcd.client_port)
    registry = ["--registry", etcd.url, "--prefix", PREFIX]
    watch_port, agent_port = free_port(), free_port()
    lbgen_processes.start("watch", "watch", "-c", str(watch_settings(tmp_path)), *registry, "--node", "lb-test",
                          "--metrics-addr", f"127.0.0.1:{watch_port}")
    lbgen_processes.start("agent", "agent", *registry, "--node", "host-m", "--host-ip", "127.0.0.1",
                          "--docker-host", docker_host, "--metrics-addr", f"127.0.0.1:{agent_port}")
    prometheus = prometheus_factory({"lbgen-watch": f"127.0.0.1:{watch_port}", "lbgen-agent": f"127.0.0.1:{agent_port}"})

    def seen(expr: str, expected: dict[str, float]) -> bool:
        return prometheus.query(expr) == expected

    def wait(expr: str, expected: dict[str, float]) -> None:
        wait_until(lambda: seen(expr, expected), 90, f"{expr} == {expected} in Prometheus", interval=0.5)

    try:
        wait("lbgen:service_served_endpoints:max", {"service=empty": 0.0, "service=web": 1.0})
        wait("lbgen:watcher_revisions_behind", {"target=conf": 0.0})
        wait("lbgen_agent_docker_up", {"": 1.0})
        wait("lbgen_agent_lease_held", {"": 1.0})
        wait_until(lambda: prometheus.alerts("LbgenServiceNoServedEndpoint"), 60, "the no-served-endpoint alert")
        assert [a["labels"]["service"] for a in prometheus.alerts("LbgenServiceNoServedEndpoint")] == ["empty"]
        assert prometheus.query("ALERTS").keys() <= {
            "alertname=LbgenServiceNoServedEndpoint,alertstate=pending,service=empty,severity=critical",
            "alertname=LbgenServiceNoServedEndpoint,alertstate=firing,service=empty,severity=critical",
        }, "no other alert for a healthy watcher and agent"

        etcd.stop()
        wait("lbgen_watcher_registry_connected", {"": 0.0})
        wait_until(lambda: prometheus.alerts("LbgenWatcherRegistryLost"), 60, "the registry-lost alert")
        wait_until(lambda: prometheus.alerts("LbgenAgentRegistryUnreachable"), 60, "the agent's etcd alert")
    except TimeoutError as e:
        seen_now = {expr: prometheus.query(expr) for expr in ("up", '{__name__=~"lbgen.*"}')}
        raise AssertionError(f"{e}\nPrometheus has {seen_now}\n{lbgen_processes.logs()}\n"
                             f"--- prometheus\n{prometheus.log.read_text()[-3000:]}") from e
