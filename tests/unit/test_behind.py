"""An LB node is behind when `services/` changed after its applied revision, deletions included
(issue 15): the rule, the store's key counts back in time, and `lbgen status` using both."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from lbgen.adapters.memory_store import MemoryStore
from lbgen.cli import main
from lbgen.core.behind import COMPACTED, DELETED, History, revisions_to_count
from lbgen.core.lb_node_status import LbStatus, TargetStatus, encode_lb_status
from lbgen.core.schema import lb_status_key
from lbgen.errors import Compacted

P = "/lbgen"
SERVICES = f"{P}/services/"


@pytest.mark.parametrize(("applied", "expected"), [
    (9, "changed"), (10, ""), (12, "deleted"), (14, "compacted"), (20, ""), (16, ""),
], ids=["put-after", "counted-equal", "deletion-after", "compacted", "at-snapshot", "not-counted"])
def test_why_a_node_is_behind(applied: int, expected: str) -> None:
    history = History(revision=20, last_put=10, keys=3, counts={10: 3, 12: 4, 14: None})
    assert history.behind(applied) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from("abcd")), max_size=30))
def test_count_at_any_revision_equals_a_snapshot_taken_then(ops: list[tuple[str, str]]) -> None:
    store = MemoryStore()
    store.put("/other/x", b"{}")
    seen = {store.revision: len(store.snapshot(SERVICES).items)}
    for op, name in ops:
        if op == "put":
            store.put(f"{SERVICES}{name}/spec", b"{}")
        else:
            store.delete(f"{SERVICES}{name}/spec")
        store.put("/other/x", b"{}")  # changes outside the prefix do not count
        seen[store.revision] = len(store.snapshot(SERVICES).items)
    for revision, count in seen.items():
        assert store.count(SERVICES, revision) == count


def test_a_compacted_revision_cannot_be_counted() -> None:
    store = MemoryStore()
    for n in range(5):
        store.put(f"{SERVICES}s{n}/spec", b"{}")
    store.compact(4)
    assert store.count(SERVICES, 4) == 3
    with pytest.raises(Compacted):
        store.count(SERVICES, 3)


def lb(store: MemoryStore, node: str, revision: int) -> None:
    status = LbStatus(node, revision, {"nginx": TargetStatus(revision)}, connected=True, updated_at=1.0)
    store.put(lb_status_key(P, node), encode_lb_status(status))


def endpoint(store: MemoryStore, eid: str) -> None:
    store.put(f"{SERVICES}web/endpoints/{eid}", json.dumps({"address": "127.0.0.1", "port": 80}).encode())


def test_status_flags_a_node_that_missed_a_deletion(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store = MemoryStore()
    for eid in ("a", "b", "c"):
        endpoint(store, eid)
    applied = store.revision
    lb(store, "lb-1", applied)
    store.delete(f"{SERVICES}web/endpoints/b")
    lb(store, "lb-2", store.revision)
    endpoint(store, "d")  # a key created and deleted after lb-2's revision leaves it in sync
    store.delete(f"{SERVICES}web/endpoints/d")
    assert revisions_to_count(P, store.snapshot(f"{P}/")) == [applied, applied + 2]
    monkeypatch.setattr("lbgen.cli.status.open_store", lambda *args: store)
    assert main(["status", "--registry", "etcd://127.0.0.1:1", "--json", "--check"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert {n["node"]: (n["behind"], n["behind_why"]) for n in document["lb_nodes"]} == {
        "lb-1": (True, DELETED), "lb-2": (False, "")}
    assert document["problems"] == [
        f"LB node lb-1: applied revision {applied}, keys under services/ were deleted since"]


def test_status_on_a_compacted_revision_compares_with_the_current_one(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store = MemoryStore()
    endpoint(store, "a")
    lb(store, "lb-1", store.revision)
    store.put("/elsewhere", b"x")
    store.compact(store.revision)
    monkeypatch.setattr("lbgen.cli.status.open_store", lambda *args: store)
    main(["status", "--registry", "etcd://127.0.0.1:1", "--json"])
    [node] = json.loads(capsys.readouterr().out)["lb_nodes"]
    assert (node["behind"], node["behind_why"]) == (True, COMPACTED)
