"""An agent's presence (`{prefix}/agents/{node}`, issue 15): the value's contract, what the agent
publishes and when, and how `lbgen status` shows it and judges it."""

from __future__ import annotations

import json
from typing import Callable

import pytest

from lbgen.adapters.memory_store import MemoryStore
from lbgen.cli.status import format_overview
from lbgen.core.agent_status import AgentStatus, agent_problems, decode_agent_status, encode_agent_status
from lbgen.core.backoff import jittered
from lbgen.core.overview import build_overview, overview_to_dict
from lbgen.core.schema import agent_key, parse_key
from lbgen.errors import InvalidValue
from lbgen.core.values import KeyValue, Snapshot
from lbgen.services.agent import Agent, AgentConfig
from tests.unit.test_agent import (  # noqa: F401 (fixtures)
    NODE, OPTIONS, PREFIX, FakeDocker, Running, leases, start, store, wait_for, web,
)

NOW = 1700000100.0
UP = AgentStatus("host-a", "0.1.0", True, NOW - 300, 3, 2, resync_at=NOW - 20, updated_at=NOW - 20)


def test_the_key_is_built_and_parsed_by_the_schema() -> None:
    assert agent_key("/lbgen", "host-a") == "/lbgen/agents/host-a"
    ref = parse_key("/lbgen", "/lbgen/agents/host-a")
    assert ref is not None and (ref.kind, ref.node, ref.in_catalog) == ("agent", "host-a", False)
    assert parse_key("/lbgen", "/lbgen/agents/a b") is None
    with pytest.raises(InvalidValue):
        agent_key("/lbgen", "a/b")


def test_a_value_round_trips() -> None:
    assert decode_agent_status("host-a", encode_agent_status(UP)) == UP


@pytest.mark.parametrize(("value", "reason"), [
    (b"[1]", "expected a JSON object"),
    (b"{", "not JSON"),
    ({"node": "host-b"}, "node 'host-b': does not match the key's node 'host-a'"),
    ({"docker_reachable": "yes"}, "docker_reachable 'yes': expected true or false"),
    ({"containers": -1}, "containers -1: expected an integer from 0"),
    ({"endpoints": True}, "endpoints True: expected an integer"),
    ({"error": "x" * 1001}, "error: expected a string of at most 1000 characters"),
    ({"version": "1.0; drop"}, "version '1.0; drop': must match"),
    ({"resync_interval": 0}, "resync_interval 0: expected seconds"),
    ({"resync_at": -5}, "resync_at -5: expected seconds since the epoch"),
], ids=["not-object", "not-json", "other-node", "reachable-text", "negative-count", "bool-count", "long-error",
        "bad-version", "zero-interval", "negative-time"])
def test_a_bad_value_is_refused_with_the_reason(value: bytes | dict[str, object], reason: str) -> None:
    raw = value if isinstance(value, bytes) else json.dumps({"docker_reachable": True, **value}).encode()
    with pytest.raises(InvalidValue, match="^" + reason.replace("(", r"\(")[:40].replace("[", r"\[")):
        decode_agent_status("host-a", raw)


@pytest.mark.parametrize(("status", "expected"), [
    (UP, []),
    (AgentStatus("host-a", docker_reachable=False, docker_since=NOW - 30, error="docker: connection refused"),
     ["agent host-a: Docker unreachable for 30s: docker: connection refused"]),
    (AgentStatus("host-a", docker_reachable=True, resync_at=NOW - 151, resync_interval=60),
     ["agent host-a: last resync 151s ago (every 60s): its view of the host is stale"]),
    (AgentStatus("host-a", docker_reachable=True, resync_at=NOW - 149, resync_interval=60), []),
], ids=["healthy", "docker-down", "stale-resync", "resync-within-slack"])
def test_problems_of_one_agent(status: AgentStatus, expected: list[str]) -> None:
    assert agent_problems(status, NOW) == expected


def presence(status: AgentStatus, lease: int = 0x10) -> KeyValue:
    return KeyValue(agent_key(PREFIX, status.node), encode_agent_status(status), 50, lease)


def test_status_lists_an_agent_with_no_endpoint_and_its_problems() -> None:
    down = AgentStatus("host-b", "0.1.0", False, NOW - 30, error="docker: connection refused", updated_at=NOW)
    invalid = KeyValue(agent_key(PREFIX, "host-c"), b'{"docker_reachable": 1}', 51)
    overview = build_overview(PREFIX, Snapshot(100, (presence(UP), presence(down), invalid)), False, now=NOW)
    assert [(a.node, a.status is not None, a.invalid[:16]) for a in overview.agents] == [
        ("host-a", True, ""), ("host-b", True, ""), ("host-c", False, "docker_reachable")]
    assert overview.problems == (
        "agent host-b: Docker unreachable for 30s: docker: connection refused",
        "agent host-c: invalid presence value: docker_reachable 1: expected true or false",
    )
    rows = [" ".join(line.split()) for line in format_overview("etcd://x", overview, NOW)]
    assert "host-a up for 300s 3 0 0 20s ago 0.1.0 -" in rows
    assert "host-b UNREACHABLE for 30s 0 0 0 never 0.1.0 -" in rows
    assert "host-c invalid presence (see problems) - 0 0 - - -" in rows


def test_the_json_document_carries_each_agent_s_presence_with_ages() -> None:
    document = overview_to_dict(build_overview(PREFIX, Snapshot(100, (presence(UP),)), now=NOW), NOW)
    [agent] = document["agents"]
    assert agent == {
        "node": "host-a", "endpoints": 0, "served": 0, "leases": [], "reporting": True, "version": "0.1.0",
        "docker_reachable": True, "docker_since_age": 300.0, "containers": 3, "registered": 2, "error": "",
        "error_age": None, "resync_age": 20.0, "resync_interval": 60.0, "age": 20.0,
    }


# --- the agent publishes it ------------------------------------------------------------------------


def published(store: MemoryStore) -> AgentStatus | None:
    kv = store.get(agent_key(PREFIX, NODE))
    return decode_agent_status(NODE, kv.value) if kv else None


def test_the_agent_publishes_its_counts_on_the_lease_of_its_endpoints(
        store: MemoryStore, start: Callable[..., Running]) -> None:
    start(FakeDocker(web(1), web(2), web(3, labels={})))
    wait_for(lambda: (s := published(store)) is not None and s.endpoints == 2, "presence with two endpoints")
    status = published(store)
    assert status is not None
    assert (status.docker_reachable, status.containers, status.endpoints, status.error) == (True, 3, 2, "")
    assert status.resync_at is not None and status.version
    assert {store.get(agent_key(PREFIX, NODE)).lease} == leases(store)  # type: ignore[union-attr]


def test_docker_down_is_published_and_the_presence_goes_with_the_lease(
        store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    docker.down = True
    running = start(docker)
    wait_for(lambda: (s := published(store)) is not None and not s.docker_reachable, "docker unreachable published")
    status = published(store)
    assert status is not None and "cannot connect to the Docker daemon" in status.error
    assert status.resync_at is None and status.endpoints == 0
    docker.down = False
    wait_for(lambda: (s := published(store)) is not None and s.docker_reachable and s.endpoints == 1, "docker back")
    docker.down = True
    docker.break_streams()
    wait_for(lambda: (s := published(store)) is not None and not s.docker_reachable, "docker lost while running")
    running.stop()
    assert published(store) is None


def test_a_quiet_agent_writes_its_presence_only_when_it_changes(
        store: MemoryStore, start: Callable[..., Running]) -> None:
    docker = FakeDocker(web(1))
    running = start(docker)
    wait_for(lambda: (s := published(store)) is not None and s.endpoints == 1)
    written = store.get(agent_key(PREFIX, NODE)).mod_revision  # type: ignore[union-attr]
    done = running.metric("lbgen_agent_reconciliations_total")
    docker.run(web(1))  # an event that changes nothing
    wait_for(lambda: running.metric("lbgen_agent_reconciliations_total") > done, "a reconciliation")
    assert store.get(agent_key(PREFIX, NODE)).mod_revision == written  # type: ignore[union-attr]
    docker.run(web(2))
    wait_for(lambda: (s := published(store)) is not None and s.endpoints == 2, "count updated")


@pytest.mark.parametrize(("rand", "delay"), [(0.0, 48.0), (0.5, 60.0), (0.99, 71.76)], ids=["low", "middle", "high"])
def test_resyncs_are_jittered_by_the_injected_random(rand: float, delay: float) -> None:
    agent = Agent(MemoryStore(), FakeDocker(), AgentConfig(PREFIX, OPTIONS), rand=lambda: rand)  # type: ignore[arg-type]
    assert agent.resync_delay() == pytest.approx(delay)
    assert jittered(60.0, rand) == pytest.approx(delay)
