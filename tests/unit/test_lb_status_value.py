"""The `{prefix}/lb/{node}` value: what `lbgen watch` writes decodes to the same status, and every
bad field is rejected with a reason that names it."""

from __future__ import annotations

import json

import pytest

from lbgen.core.lb_node_status import LbStatus, TargetStatus, applied_revision, decode_lb_status, encode_lb_status
from lbgen.errors import InvalidValue
from lbgen.services.watcher_status import WatcherStatus

STATUS = LbStatus(
    node="lb-1", revision=40,
    targets={"nginx": TargetStatus(41, "", 1700000000.5), "haproxy": TargetStatus(40, "check: exited 1", None)},
    connected=True, version="0.1.0", updated_at=1700000001.0,
)


def test_an_encoded_status_decodes_to_itself() -> None:
    assert decode_lb_status("lb-1", encode_lb_status(STATUS)) == STATUS


def test_the_deployers_minimal_value_still_decodes() -> None:
    assert decode_lb_status("lb-1", b'{"revision": 7}') == LbStatus("lb-1", 7, {})


def test_errors_are_cut_when_encoded_so_the_value_stays_readable() -> None:
    long = LbStatus("lb-1", 1, {"t": TargetStatus(1, "x" * 5000)})
    assert len(decode_lb_status("lb-1", encode_lb_status(long)).targets["t"].error) == 1000


@pytest.mark.parametrize(("targets", "expected"), [
    ({}, 0),
    ({"a": TargetStatus(5), "b": TargetStatus(9)}, 5),
    ({"a": TargetStatus(5), "b": TargetStatus(0)}, 0),
], ids=["no targets", "the slowest target", "one never applied"])
def test_the_node_revision_is_what_every_target_applied(targets: dict[str, TargetStatus], expected: int) -> None:
    assert applied_revision(targets) == expected


def test_errors_list_the_registry_first_then_each_failing_target() -> None:
    status = LbStatus("lb-1", 0, {"b": TargetStatus(error="e2"), "a": TargetStatus(error="e1"), "c": TargetStatus()},
                      error="etcd down")
    assert list(status.errors.items()) == [("registry", "etcd down"), ("a", "e1"), ("b", "e2")]


def _with(**changes: object) -> bytes:
    value = json.loads(encode_lb_status(STATUS))
    value.update(changes)
    return json.dumps(value).encode()


@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "not JSON"),
    (b"[1]", "expected a JSON object, got list"),
    (b"{}", "missing field 'revision'"),
    (_with(revision=-1), "revision -1"),
    (_with(revision=True), "revision True"),
    (_with(node="lb-2"), "does not match the key's node 'lb-1'"),
    (_with(connected="yes"), "connected 'yes'"),
    (_with(version="1.0; rm"), "version '1.0; rm'"),
    (_with(error=5), "error: expected a string"),
    (_with(updated_at="now"), "updated_at 'now'"),
    (_with(targets=[]), "targets: expected a JSON object, got list"),
    (_with(targets={"bad name": {}}), "target 'bad name'"),
    (_with(targets={"t": {"revision": "7"}}), "targets.t.revision '7'"),
    (_with(targets={"t": {"applied_at": -1}}), "targets.t.applied_at -1"),
    (_with(targets={"t": {"error": "x" * 1001}}), "targets.t.error: expected a string of at most 1000"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_value_is_rejected_naming_the_field(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidValue, match=message.replace("(", r"\(").replace("[", r"\[")):
        decode_lb_status("lb-1", raw)


def test_quarantined_services_round_trip_and_old_values_have_none() -> None:
    held = LbStatus("lb-1", 3, {"nginx": TargetStatus(3, quarantined={"web": "[emerg] host not found", "api": "x"})})
    decoded = decode_lb_status("lb-1", encode_lb_status(held))
    assert decoded == held
    assert decoded.quarantined == [("nginx", "api", "x"), ("nginx", "web", "[emerg] host not found")]
    old = b'{"revision": 3, "targets": {"nginx": {"revision": 3, "error": "", "applied_at": null}}}'
    assert decode_lb_status("lb-1", old).targets["nginx"].quarantined == {}


def test_at_most_a_thousand_quarantined_services_are_listed() -> None:
    many = {f"s{i:04d}": "refused" for i in range(1500)}
    decoded = decode_lb_status("lb-1", encode_lb_status(LbStatus("lb-1", 1, {"t": TargetStatus(1, quarantined=many)})))
    assert len(decoded.targets["t"].quarantined) == 1000


@pytest.mark.parametrize(("quarantined", "message"), [
    ([], "targets.nginx.quarantined: expected a JSON object, got list"),
    ({"bad name": "x"}, "targets.nginx.quarantined service 'bad name'"),
    ({"web": 5}, "targets.nginx.quarantined.web: expected a string"),
    ({"web": "x" * 1001}, "targets.nginx.quarantined.web: expected a string of at most 1000"),
    ({f"s{i}": "x" for i in range(1001)}, "more than 1000 services"),
], ids=["not an object", "bad service name", "reason not a string", "reason too long", "too many"])
def test_a_bad_quarantine_list_is_rejected_with_its_field(quarantined: object, message: str) -> None:
    raw = json.dumps({"revision": 1, "targets": {"nginx": {"revision": 1, "quarantined": quarantined}}})
    with pytest.raises(InvalidValue, match=message.replace("[", r"\[")):
        decode_lb_status("lb-1", raw)


def test_runtime_counts_round_trip_and_old_values_have_none() -> None:
    counted = LbStatus("lb-1", 3, {"nginx": TargetStatus(3, runtime_updates=97, runtime_fallbacks=2)})
    assert decode_lb_status("lb-1", encode_lb_status(counted)) == counted
    old = b'{"revision": 3, "targets": {"nginx": {"revision": 3}}}'
    assert decode_lb_status("lb-1", old).targets["nginx"].runtime_updates == 0
    with pytest.raises(InvalidValue, match="targets.nginx.runtime_fallbacks"):
        decode_lb_status("lb-1", b'{"revision": 3, "targets": {"nginx": {"runtime_fallbacks": -1}}}')


def test_the_watcher_counts_runtime_updates_and_fallbacks_per_target() -> None:
    status = WatcherStatus()
    for method, fallback in [("runtime", ""), ("runtime", ""), ("reload", "nginx reads back ..."), ("reload", "")]:
        status.went_live("nginx", method, fallback)
    assert (status.runtime_updates, status.runtime_fallbacks) == ({"nginx": 2}, {"nginx": 1})
