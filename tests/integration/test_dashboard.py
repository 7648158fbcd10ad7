"""`lbgen dashboard` as a process on a real etcd: its JSON API is `lbgen status --json`, a put in
etcd arrives as a server-sent event, the token is enforced, an etcd outage shows as "disconnected"
and recovers, and SIGTERM stops it with a browser still connected."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.dashboard import ENDPOINT, Dashboard, EventReader, put, seed, start_dashboard, without_ages
from tests.support.etcd import EtcdFactory, EtcdServer
from tests.support.lbgen_proc import LbgenProcesses, lbgen_processes, lbgen_status  # noqa: F401
from tests.support.util import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def dashboard(etcd_server: EtcdServer, etcd_prefix: str, lbgen_processes: LbgenProcesses,  # noqa: F811
              ) -> Iterator[Dashboard]:
    seed(etcd_server, etcd_prefix)
    yield start_dashboard(lbgen_processes, etcd_server.url, etcd_prefix)


def test_the_json_api_is_lbgen_status_json(etcd_factory: EtcdFactory, etcd_prefix: str,
                                           lbgen_processes: LbgenProcesses) -> None:  # noqa: F811
    etcd = etcd_factory()  # its own: the revision in the document is the whole etcd's
    seed(etcd, etcd_prefix)
    dashboard = start_dashboard(lbgen_processes, etcd.url, etcd_prefix)
    expected = lbgen_status(etcd.url, etcd_prefix)
    served = wait_until(lambda: (d := dashboard.json("/api/status"))["revision"] == expected["revision"] and d,
                        30, f"the dashboard at revision {expected['revision']}")
    assert without_ages(served) == without_ages(expected)
    assert served["lb_nodes"][0]["age"] is not None  # the ages are there, only not compared
    [web] = served["services"]
    assert [e["draining"] for e in web["endpoints"]] == [True, False]
    assert served["rejected"][0]["key"] == f"{etcd_prefix}/services/bad/spec" and served["problems"]


def test_a_put_in_etcd_arrives_as_an_event_without_asking(dashboard: Dashboard, etcd_server: EtcdServer,
                                                          etcd_prefix: str) -> None:
    reader = EventReader(dashboard.url + "/events")
    try:
        reader.next("connected")
        revision = put(etcd_server, f"{etcd_prefix}/services/api/endpoints/host-b.api.1", {**ENDPOINT, "node": "host-b"})
        changes = reader.next("changes", lambda d: d[0]["revision"] >= revision)  # sent first, then the status
        assert {"key": f"{etcd_prefix}/services/api/endpoints/host-b.api.1", "kind": "put",
                "revision": revision} in [{k: c[k] for k in ("key", "kind", "revision")} for c in changes]
        status = reader.next("status", lambda d: d["revision"] >= revision)
        assert [s["name"] for s in status["services"]] == ["api", "web"]
        assert "host-b" in [a["node"] for a in status["agents"]]
    finally:
        reader.close()


def test_the_token_guards_the_data_not_the_page(etcd_server: EtcdServer, etcd_prefix: str, tmp_path: Path,
                                                lbgen_processes: LbgenProcesses) -> None:  # noqa: F811
    (tmp_path / "token").write_text("s3cret-token\n")
    dashboard = start_dashboard(lbgen_processes, etcd_server.url, etcd_prefix, "--token-file", str(tmp_path / "token"))
    for path in ("/api/status", "/api/changes", "/events", "/api/status?token=wrong"):
        assert dashboard.get(path)[0] == 401, path
    assert dashboard.get("/api/status", {"Authorization": "Bearer wrong"})[0] == 401
    wait_until(lambda: dashboard.get("/api/status?token=s3cret-token")[0] == 200, 30, "the first snapshot")
    assert dashboard.get("/api/status", {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert dashboard.get("/")[0] == 200 and dashboard.get("/static/dashboard.js")[0] == 200
    with urllib.request.urlopen(dashboard.url + "/", timeout=10) as response:
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert dashboard.get("/api/status?token=s3cret-token", {"Host": "elsewhere.example"})[0] == 200  # a token: any Host
    reader = EventReader(dashboard.url + "/events?token=s3cret-token")
    try:
        assert reader.next("connected")["connected"] is True
    finally:
        reader.close()
    assert "s3cret-token" not in dashboard.process.output()


def test_an_etcd_outage_shows_as_disconnected_and_recovers(etcd_factory: EtcdFactory, etcd_prefix: str,
                                                          lbgen_processes: LbgenProcesses) -> None:  # noqa: F811
    etcd = etcd_factory()
    seed(etcd, etcd_prefix)
    dashboard = start_dashboard(lbgen_processes, etcd.url, etcd_prefix, "--etcd-timeout", "2")
    reader = EventReader(dashboard.url + "/events")
    try:
        reader.next("connected")
        etcd.stop()
        lost = reader.next("disconnected")
        assert lost["connected"] is False and lost["error"]
        assert dashboard.get("/healthz")[0] == 503
        assert [s["name"] for s in dashboard.json("/api/status")["services"]] == ["web"]  # the last known
        etcd.start()
        reader.next("connected")
        assert dashboard.get("/healthz") == (200, b"ok\n")
        revision = put(etcd, f"{etcd_prefix}/services/api/spec", {"listen": 81})
        reader.next("status", lambda d: "api" in [s["name"] for s in d["services"]] and d["revision"] >= revision)
    finally:
        reader.close()


def test_without_a_token_another_host_name_is_refused(dashboard: Dashboard) -> None:
    assert dashboard.get("/api/status", {"Host": "rebound.attacker.example"})[0] == 421
    assert dashboard.get("/", {"Host": "localhost"})[0] == 200


def test_sigterm_stops_it_with_a_browser_connected(dashboard: Dashboard) -> None:
    reader = EventReader(dashboard.url + "/events")
    reader.next("connected")
    assert dashboard.process.terminate() == 0
    assert "SIGTERM: stopping" in dashboard.process.output()
    reader.close()
