"""pytest plugin: a real 3-member etcd cluster on loopback ports, members a test may kill and restart.

`etcd_cluster(size=3)` → `EtcdCluster`; every member is stopped and its directory removed after
the test. Short heartbeat and election timeouts make a lost leader replaced within about a second.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.etcd import ETCD_BINARY, EtcdServer, require_binary

FAST_ELECTIONS = ("--heartbeat-interval=50", "--election-timeout=500")


@dataclass
class ClusterMember(EtcdServer):
    """One member: the same as a single server, but bootstrapped into `initial_cluster`."""

    initial_cluster: str = ""
    token: str = ""

    def argv(self) -> list[str]:
        argv = super().argv()
        for flag, value in (("--initial-cluster", self.initial_cluster), ("--initial-cluster-token", self.token)):
            argv[argv.index(flag) + 1] = value
        return argv


@dataclass
class EtcdCluster:
    members: list[ClusterMember] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The registry URL lbgen takes: every member, comma-separated."""
        return ",".join(member.url for member in self.members)

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", member.client_port) for member in self.members)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def start_cluster(root: Path, size: int) -> EtcdCluster:
    """Start `size` members and wait until each one serves (none can before a quorum is up)."""
    members = [ClusterMember(Path(tempfile.mkdtemp(prefix=f"m{i}-", dir=root)), name=f"m{i}",
                             extra_args=FAST_ELECTIONS) for i in range(size)]
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    token = uuid.uuid4().hex
    cluster = EtcdCluster(members)
    for member in members:
        member.initial_cluster, member.token = initial, token
        member.start(wait=False)
    try:
        for member in members:
            member.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[Callable[[int], EtcdCluster]]:
    """`etcd_cluster(3)` → a running cluster this test owns."""
    require_binary(ETCD_BINARY, "etcd")
    started: list[EtcdCluster] = []

    def start(size: int = 3) -> EtcdCluster:
        cluster = start_cluster(tmp_path, size)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
        for member in cluster.members:
            shutil.rmtree(member.workdir, ignore_errors=True)
