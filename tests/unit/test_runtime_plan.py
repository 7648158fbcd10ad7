"""Runtime plans: which config changes the Runtime API can apply, with which commands, in which order;
and reading `show servers state` back."""

from __future__ import annotations

import pytest

from lbgen.core.kinds.haproxy.runtime_plan import (
    ObservedServer,
    ServerState,
    mismatches,
    parse_servers_state,
    plan_runtime,
)

HEAD = """global
    stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd listeners

frontend http_80
    mode http
    bind 127.0.0.1:80
    default_backend web
"""
FREE = "127.0.0.1:1 disabled weight 1"


def config(web: list[str], api: list[str] | None = None, head: str = HEAD) -> str:
    """A haproxy.cfg with backends `web` (and `api`): one `server slotN <rest>` line per entry."""
    text = head
    for name, servers in (("web", web), ("api", api)):
        if servers is not None:
            text += f"\nbackend {name}\n    mode http\n    balance roundrobin\n"
            text += "".join(f"    server slot{i} {rest}\n" for i, rest in enumerate(servers, start=1))
    return text


BASE = config(["10.0.0.1:80 weight 1", FREE], ["10.0.0.9:81 weight 1", FREE])

PLANS = [
    ("add", config(["10.0.0.1:80 weight 1", "10.0.0.2:80 weight 1"], ["10.0.0.9:81 weight 1", FREE]),
     ["set server web/slot2 addr 10.0.0.2 port 80", "set server web/slot2 state ready"]),
    ("remove drains then maints", config([FREE, FREE], ["10.0.0.9:81 weight 1", FREE]),
     ["set server web/slot1 state drain", "set server web/slot1 state maint",
      "set server web/slot1 addr 127.0.0.1 port 1"]),
    ("weight", config(["10.0.0.1:80 weight 5", FREE], ["10.0.0.9:81 weight 1", FREE]),
     ["set weight web/slot1 5"]),
    ("unhealthy keeps its address", config(["10.0.0.1:80 disabled weight 1", FREE], ["10.0.0.9:81 weight 1", FREE]),
     ["set server web/slot1 state drain", "set server web/slot1 state maint"]),
    ("re-address in service", config(["[2001:db8::1]:8080 weight 1", FREE], ["10.0.0.9:81 weight 1", FREE]),
     ["set server web/slot1 addr 2001:db8::1 port 8080"]),
    ("arrivals before moves before departures",
     config(["10.0.0.5:80 weight 1", "10.0.0.2:80 weight 1"], [FREE, FREE]),
     ["set server web/slot2 addr 10.0.0.2 port 80", "set server web/slot2 state ready",
      "set server web/slot1 addr 10.0.0.5 port 80",
      "set server api/slot1 state drain", "set server api/slot1 state maint",
      "set server api/slot1 addr 127.0.0.1 port 1"]),
    ("idle slot re-addressed", config(["10.0.0.1:80 weight 1", "10.0.0.3:80 disabled weight 2"],
                                      ["10.0.0.9:81 weight 1", FREE]),
     ["set server web/slot2 addr 10.0.0.3 port 80", "set weight web/slot2 2"]),
    ("weight defaults to 1", config(["10.0.0.1:80", FREE], ["10.0.0.9:81 weight 1", FREE]), []),
]


@pytest.mark.parametrize("new, commands", [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_slot_changes_become_runtime_commands(new: str, commands: list[str]) -> None:
    plan = plan_runtime(BASE, new)
    assert plan is not None
    assert list(plan.commands) == commands


RELOADS = [
    ("slots exhausted", config(["10.0.0.1:80 weight 1", FREE, FREE, FREE], ["10.0.0.9:81 weight 1", FREE])),
    ("backend added", config(["10.0.0.1:80 weight 1", FREE], ["10.0.0.9:81 weight 1", FREE]) + "\nbackend x\n"),
    ("backend removed", config(["10.0.0.1:80 weight 1", FREE])),
    ("frontend changed", config(["10.0.0.1:80 weight 1", FREE], ["10.0.0.9:81 weight 1", FREE],
                                HEAD.replace("bind 127.0.0.1:80", "bind 127.0.0.1:81"))),
    ("other line in a backend", BASE.replace("balance roundrobin", "balance leastconn", 1)),
    ("server option added", BASE.replace("10.0.0.1:80 weight 1", "10.0.0.1:80 weight 1 check")),
    ("slot renamed", BASE.replace("slot2", "other", 1)),
    ("host name", BASE.replace("10.0.0.1:80", "app.example:80")),
    ("no port", BASE.replace("10.0.0.1:80", "10.0.0.1")),
    ("weight out of range", BASE.replace("10.0.0.1:80 weight 1", "10.0.0.1:80 weight 300")),
    ("weight missing its value", BASE.replace("10.0.0.1:80 weight 1", "10.0.0.1:80 weight")),
    ("quoted", BASE.replace("10.0.0.1:80 weight 1", '"10.0.0.1:80" weight 1')),
    ("comment added", BASE + "# note\n"),
]


@pytest.mark.parametrize("new", [r[1] for r in RELOADS], ids=[r[0] for r in RELOADS])
def test_anything_but_slot_changes_needs_a_reload(new: str) -> None:
    assert plan_runtime(BASE, new) is None


@pytest.mark.parametrize("old, new", [
    ("# a\n" + BASE, "# b\n" + BASE),
    (BASE + "# a\n", BASE + "# b\n"),
    (BASE.replace("    mode http\n", "# a\n", 1), BASE.replace("    mode http\n", "# b\n", 1)),
], ids=["comment-before-any-section", "comment-after-the-servers", "comment-in-a-section"])
def test_a_changed_comment_needs_a_reload(old: str, new: str) -> None:
    assert plan_runtime(old, new) is None


def test_many_changes_in_one_backend_are_each_planned_once() -> None:
    old = config([FREE] * 8)
    new = config([f"10.0.0.{i}:80 weight 1" for i in range(1, 9)])
    plan = plan_runtime(old, new)
    assert plan is not None and len(plan.commands) == 16 and list(plan.expected) == ["web"]
    assert plan.expected["web"]["slot8"] == ServerState("10.0.0.8", 80, 1, True)


def test_an_unreadable_old_config_needs_a_reload() -> None:
    assert plan_runtime(BASE.replace("10.0.0.1:80", "[::1"), BASE) is None


def test_expected_state_covers_every_server_of_touched_backends_only() -> None:
    plan = plan_runtime(BASE, config(["10.0.0.1:80 weight 3", FREE], ["10.0.0.9:81 weight 1", FREE]))
    assert plan is not None
    assert dict(plan.expected) == {"web": {
        "slot1": ServerState("10.0.0.1", 80, 3, True), "slot2": ServerState("127.0.0.1", 1, 1, False)}}


STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord
3 web 1 slot1 10.0.0.1 2 0 3 1 7 1 0 2 0 0 0 0 - 80 -
3 web 2 slot2 127.0.0.1 0 5 1 1 1 1 0 0 8 0 0 0 - 1 -
3 web 3 slot3 2001:db8::1 2 4 1 1 1 1 0 0 8 0 0 0 - 8080 -

"""


def test_servers_state_is_read_by_column_name() -> None:
    assert parse_servers_state(STATE) == {
        "slot1": ObservedServer("10.0.0.1", 80, 3, 0),
        "slot2": ObservedServer("127.0.0.1", 1, 1, 5),
        "slot3": ObservedServer("2001:db8::1", 8080, 1, 4),
    }


@pytest.mark.parametrize("text", ["", "No such backend.\n", "1\n# srv_name\nx\n", STATE.replace(" 80 -", " x -")],
                         ids=["empty", "error", "missing columns", "bad port"])
def test_an_unreadable_servers_state_is_an_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_servers_state(text)


MATCHES = [
    ("ready", ObservedServer("10.0.0.1", 80, 3, 0), ServerState("10.0.0.1", 80, 3, True), True),
    ("config-disabled, then ready", ObservedServer("10.0.0.1", 80, 3, 4), ServerState("10.0.0.1", 80, 3, True), True),
    ("maint", ObservedServer("10.0.0.1", 80, 3, 1), ServerState("10.0.0.1", 80, 3, False), True),
    ("maint, expected ready", ObservedServer("10.0.0.1", 80, 3, 1), ServerState("10.0.0.1", 80, 3, True), False),
    ("ready, expected maint", ObservedServer("10.0.0.1", 80, 3, 4), ServerState("10.0.0.1", 80, 3, False), False),
    ("still draining", ObservedServer("10.0.0.1", 80, 3, 8), ServerState("10.0.0.1", 80, 3, True), False),
    ("other weight", ObservedServer("10.0.0.1", 80, 2, 0), ServerState("10.0.0.1", 80, 3, True), False),
    ("other port", ObservedServer("10.0.0.1", 81, 3, 0), ServerState("10.0.0.1", 80, 3, True), False),
]


@pytest.mark.parametrize("observed, expected, same", [m[1:] for m in MATCHES], ids=[m[0] for m in MATCHES])
def test_observed_state_matches_expected(observed: ObservedServer, expected: ServerState, same: bool) -> None:
    assert observed.matches(expected) is same


def test_mismatches_name_each_server() -> None:
    expected = {"slot1": ServerState("10.0.0.1", 80, 3, True), "slot9": ServerState("127.0.0.1", 1, 1, False)}
    problems = mismatches("web", expected, parse_servers_state(STATE))
    assert [p.split(":")[0] for p in problems] == ["web/slot9", "web/slot2", "web/slot3"]
    assert mismatches("web", {"slot1": expected["slot1"]}, {"slot1": ObservedServer("10.0.0.1", 80, 3, 0)}) == []
