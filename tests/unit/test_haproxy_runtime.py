"""HaproxyRuntime with a scripted stats socket: which answers count as success, which send the
applier to the reload path, and what the error says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lbgen.adapters.kinds.haproxy.runtime import HaproxyRuntime
from lbgen.adapters.process import SystemClock
from lbgen.core.kinds.haproxy.runtime_plan import RuntimePlan, ServerState
from lbgen.core.settings import Target
from lbgen.errors import ApplyError
from lbgen.ports import Clock

HEADER = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_port\n"
READY = HEADER + "3 web 1 slot1 10.0.0.2 2 4 1 80\n"
PLAN = RuntimePlan(
    ("set server web/slot1 addr 10.0.0.2 port 80", "set server web/slot1 state ready"),
    {"web": {"slot1": ServerState("10.0.0.2", 80, 1, True)}},
)
ADDR_OK = "IP changed from '127.0.0.1' to '10.0.0.2', port changed from '1' to '80' by 'stats socket command'\n\n"


def scripted(answers: dict[str, str], sent: list[str]) -> Callable[[Path, str, Clock, float], str]:
    def query(path: Path, command: str, clock: Clock, deadline: float) -> str:
        sent.append(command)
        key = command.split()[0] + " " + command.split()[-1] if command.startswith("set") else command
        if key not in answers:
            raise ConnectionRefusedError(111, "Connection refused")
        return answers[key]
    return query


def runtime(tmp_path: Path, answers: dict[str, str], sent: list[str]) -> HaproxyRuntime:
    sock = tmp_path / "stats.sock"
    sock.touch()
    target = Target(name="lb", template="t", dest="d", kind="haproxy", vars={"stats_socket": str(sock)}, runtime=True)
    return HaproxyRuntime(target, SystemClock(), scripted(answers, sent))


def test_commands_are_sent_in_order_then_read_back(tmp_path: Path) -> None:
    sent: list[str] = []
    answers = {"set 80": ADDR_OK, "set ready": "\n", "show servers state web": READY}
    runtime(tmp_path, answers, sent).apply(PLAN)
    assert sent == [*PLAN.commands, "show servers state web"]


@pytest.mark.parametrize("answers, message", [
    ({"set 80": "No such server.\n\n"}, "haproxy refused `set server web/slot1 addr 10.0.0.2 port 80`: No such server."),
    ({"set 80": ADDR_OK, "set ready": "\n", "show servers state web": READY.replace(" 2 4 1 80", " 0 1 1 80")},
     "lb: runtime state differs: web/slot1: expected"),
    ({"set 80": ADDR_OK, "set ready": "\n", "show servers state web": "Can't find backend.\n"},
     "lb: reading back web: not a `show servers state` answer"),
    ({"set 80": ADDR_OK}, "lb: haproxy stats socket"),
], ids=["refused", "mismatch", "unreadable", "unreachable"])
def test_every_failure_is_an_apply_error_naming_it(tmp_path: Path, answers: dict[str, str], message: str) -> None:
    with pytest.raises(ApplyError) as caught:
        runtime(tmp_path, answers, []).apply(PLAN)
    assert message in str(caught.value)


def test_a_missing_socket_fails_at_once(tmp_path: Path) -> None:
    sent: list[str] = []
    api = runtime(tmp_path, {}, sent)
    api.socket.unlink()
    with pytest.raises(ApplyError, match="no haproxy stats socket at"):
        api.apply(PLAN)
    assert sent == []
