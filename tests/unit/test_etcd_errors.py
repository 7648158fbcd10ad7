"""How etcd/gRPC failures are classified: retry elsewhere (unavailable) or report (error)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from pyetcd import exceptions as etcd_exceptions

from lbgen.adapters.etcd_connection import EtcdConfig, describe, grpc_options, is_unavailable, rotated
from lbgen.adapters.etcd_store import EtcdStore


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def wrapped(error: grpc.RpcError) -> Exception:
    """What pyetcd raises: its own exception, raised while handling the gRPC one."""
    try:
        raise error
    except grpc.RpcError:
        try:
            raise etcd_exceptions.ConnectionFailedError()
        except etcd_exceptions.ConnectionFailedError as e:
            return e


@pytest.mark.parametrize(("error", "unavailable", "text"), [
    (FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect\nsecond line"), True, "unavailable: failed to connect"),
    (FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), True, "deadline_exceeded: Deadline Exceeded"),
    (FakeRpcError(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"), False,
     "not_found: etcdserver: requested lease not found"),
    (FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, ""), False, "invalid_argument: no details"),
    (wrapped(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")), True, "unavailable: connection refused"),
    (etcd_exceptions.NoServerAvailableError("No endpoint available"), True, "No endpoint available"),
    (etcd_exceptions.PreconditionFailedError(), False, "PreconditionFailedError"),
], ids=["unavailable", "deadline", "lease-not-found", "no-details", "wrapped-by-pyetcd", "no-server", "precondition"])
def test_errors_are_classified_and_described_on_one_line(error: Exception, unavailable: bool, text: str) -> None:
    assert is_unavailable(error) is unavailable
    assert describe(error) == text


@pytest.mark.parametrize(("timeout", "ms"), [(5.0, 5000), (0.25, 250), (60, 60000)], ids=["default", "short", "long"])
def test_the_connect_timeout_is_the_call_timeout(timeout: float, ms: int) -> None:
    """gRPC reads `min_reconnect_backoff_ms` as the minimum connect timeout: at 100 ms, etcd 50 ms
    away was unreachable (issue 10.7); it follows `--etcd-timeout` instead."""
    options = dict(grpc_options(EtcdConfig(endpoints=(("127.0.0.1", 2379),), timeout=timeout)))
    assert options["grpc.min_reconnect_backoff_ms"] == ms
    assert options["grpc.max_reconnect_backoff_ms"] == 1_000, "reconnects stay quick after an outage"


def test_each_store_starts_its_failover_order_at_its_own_offset() -> None:
    """pyetcd fails over to the first live endpoint in list order: a fleet that listed the members
    in one order would all move to the same member when theirs restarts."""
    config = EtcdConfig(endpoints=(("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)))
    assert list(EtcdStore(config, start=1)._client.endpoints) == ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]
    assert rotated("abc", 5) == ["c", "a", "b"]
    firsts = {rotated("abc", None)[0] for _ in range(200)}
    assert firsts == {"a", "b", "c"}


@pytest.mark.parametrize("module", ["lbgen.adapters.etcd_watch", "lbgen.adapters.etcd_store"])
def test_grpc_fork_support_is_off_before_grpc_is_imported(module: str) -> None:
    """The bounded render forks; gRPC's fork support would restart its threads in every child.
    The variable only counts if it is set before grpc's first import, whichever etcd module comes first."""
    probe = textwrap.dedent(f"""
        import os, sys
        class Check:
            def find_spec(self, name, path=None, target=None):
                if name == "grpc":
                    print("fork support:", os.environ.get("GRPC_ENABLE_FORK_SUPPORT"), flush=True)
                return None
        sys.meta_path.insert(0, Check())
        import {module}
        """)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.splitlines()[:1] == ["fork support: false"]
