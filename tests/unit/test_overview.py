"""`lbgen status`'s view of one snapshot: agents seen through endpoints, LB nodes in sync or
behind, and every problem an operator must see listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbgen.cli import main
from lbgen.cli.status import format_overview, table
from lbgen.core.lb_node_status import LbStatus, TargetStatus, encode_lb_status
from lbgen.core.overview import build_overview, overview_to_dict
from lbgen.core.values import KeyValue, Snapshot

P = "/lbgen"
NOW = 1700000100.0


def ep(service: str, eid: str, rev: int, node: str = "host-a", health: str = "healthy", lease: int = 0x10) -> KeyValue:
    value = {"address": "127.0.0.2", "port": 8000 + rev, "node": node, "health": health}
    return KeyValue(f"{P}/services/{service}/endpoints/{eid}", json.dumps(value).encode(), rev, lease)


def lb(node: str, revision: int, connected: bool = True, error: str = "", mod: int = 90) -> KeyValue:
    status = LbStatus(node, revision, {"nginx": TargetStatus(revision, error, NOW - 5)}, connected,
                      version="0.1.0", updated_at=NOW - 3)
    return KeyValue(f"{P}/lb/{node}", encode_lb_status(status), mod, 0x20)


HEALTHY = [ep("web", "host-a.w1", 10), ep("web", "host-b.w2", 12, node="host-b", lease=0x11)]


def problems(*items: KeyValue, expect_lbs: bool = True) -> tuple[str, ...]:
    return build_overview(P, Snapshot(100, items), expect_lbs).problems


def test_a_healthy_system_has_no_problem() -> None:
    assert problems(*HEALTHY, lb("lb-1", 12), lb("lb-2", 40)) == ()


@pytest.mark.parametrize(("items", "expected"), [
    ((lb("lb-1", 11),), "LB node lb-1: applied revision 11, behind the registry's 12"),
    ((lb("lb-1", 12, error="check: haproxy -c exited 1"),), "LB node lb-1: nginx: check: haproxy -c exited 1"),
    ((lb("lb-1", 12, connected=False),), "LB node lb-1: not connected to the registry"),
    ((KeyValue(f"{P}/lb/lb-1", b'{"revision": "x"}', 90),), "LB node lb-1: invalid status value: revision 'x'"),
    ((), "no LB node reports its status"),
    ((lb("lb-1", 13), ep("api", "host-a.a1", 13, health="unhealthy")), "service api: no served endpoint (1 registered)"),
    ((lb("lb-1", 13), KeyValue(f"{P}/services/api/spec", b'{"listen": 0}', 13)),
     f"{P}/services/api/spec: rejected: listen 0"),
], ids=["behind", "target error", "disconnected", "invalid value", "no LB node", "nothing served", "rejected"])
def test_each_problem_is_listed(items: tuple[KeyValue, ...], expected: str) -> None:
    found = problems(*HEALTHY, *items)
    assert any(p.startswith(expected) for p in found), found


def test_a_file_registry_expects_no_lb_status() -> None:
    assert problems(*HEALTHY, expect_lbs=False) == ()


def test_agents_are_the_nodes_named_by_endpoints_with_their_leases() -> None:
    overview = build_overview(P, Snapshot(100, (*HEALTHY, ep("web", "host-a.w3", 13, health="starting"))))
    assert [(a.node, a.endpoints, a.served, a.leases) for a in overview.agents] == [
        ("host-a", 2, 1, (0x10,)), ("host-b", 1, 1, (0x11,))]


def test_the_json_document_gives_ages_not_timestamps() -> None:
    document = overview_to_dict(build_overview(P, Snapshot(100, (*HEALTHY, lb("lb-1", 12)))), NOW)
    [node] = document["lb_nodes"]
    assert (node["revision"], node["behind"], node["age"], node["targets"]["nginx"]["applied_age"]) == (12, False, 3.0, 5.0)
    assert [a["leases"] for a in document["agents"]] == [["10"], ["11"]]


def test_the_text_report_shows_each_lb_node_and_target() -> None:
    text = "\n".join(format_overview("etcd://x", build_overview(P, Snapshot(100, (*HEALTHY, lb("lb-1", 11)))), NOW))
    assert "lb-1  11        behind  yes        3s ago   0.1.0" in text
    assert "lb-1/nginx  11  applied 5s ago" in text
    assert "problems (1):\n  LB node lb-1: applied revision 11, behind the registry's 12" in text


def test_table_pads_every_column_but_the_last() -> None:
    assert table([["a", "bb", "c"], ["ccc", "d", ""]]) == ["a    bb  c", "ccc  d"]


def test_status_on_a_file_registry_exits_0_and_1_with_check_on_a_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text("services:\n  web:\n    spec: {listen: 80}\n    endpoints:\n"
                        "      a: {address: 127.0.0.1, port: 8080, health: unhealthy}\n")
    assert main(["status", "--registry", f"file:{registry}"]) == 0
    assert "service web: no served endpoint (1 registered)" in capsys.readouterr().out
    assert main(["status", "--registry", f"file:{registry}", "--check", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"] == ["service web: no served endpoint (1 registered)"]


def quarantined_lb(node: str, revision: int) -> KeyValue:
    target = TargetStatus(revision, "", NOW - 5, quarantined={"web": "[emerg] host not found in upstream"})
    status = LbStatus(node, revision, {"nginx": target}, True, version="0.1.0", updated_at=NOW - 3)
    return KeyValue(f"{P}/lb/{node}", encode_lb_status(status), 90, 0x20)


def test_a_quarantined_service_is_a_problem_and_not_served() -> None:
    overview = build_overview(P, Snapshot(100, (*HEALTHY, quarantined_lb("lb-1", 12))))
    assert overview.problems == ("LB node lb-1: nginx: service web quarantined (held back, not as registered): "
                                 "[emerg] host not found in upstream",)
    text = "\n".join(format_overview("etcd://x", overview, NOW))
    assert "web  (no spec)  2/2 endpoints held back" in text
    assert "quarantined on lb-1/nginx (held back, not as registered): [emerg] host not found" in text
    assert "quarantined (not served as registered)" in text and " served\n" not in text
    assert "lb-1  12        quarantined" in text and "lb-1/nginx  12  applied 5s ago  quarantined: web" in text
    document = overview_to_dict(overview, NOW)
    [web] = document["services"]
    assert web["quarantined"] == [{"lb": "lb-1/nginx", "reason": "[emerg] host not found in upstream"}]
    assert [e["served"] for e in web["endpoints"]] == [False, False]
    assert document["lb_nodes"][0]["targets"]["nginx"]["quarantined"] == {"web": "[emerg] host not found in upstream"}


def test_an_endpoint_with_a_drain_marker_is_draining_in_the_document_and_the_text() -> None:
    marker = KeyValue(f"{P}/drain/host-a.w1", b'{"container": "c1"}', 14, 0x30)
    overview = build_overview(P, Snapshot(100, (*HEALTHY, marker, lb("lb-1", 14))))
    endpoints = overview_to_dict(overview, NOW)["services"][0]["endpoints"]
    assert [(e["id"], e["draining"]) for e in endpoints] == [("host-a.w1", True), ("host-b.w2", False)]
    assert "served, draining" in "\n".join(format_overview("etcd://x", overview, NOW))
