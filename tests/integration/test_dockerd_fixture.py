"""The dockerd fixture cleans up after itself, and after an aborted run (`make test` is rerun)."""

from __future__ import annotations

import os
import socket
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.docker import DockerdFactory
from tests.support.dockerd import reap_stale
from tests.support.util import free_port, wait_until

pytestmark = pytest.mark.integration


def _mounts_under(root: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(f"{root}/")]


def _processes_naming(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.fsencode(root) in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_daemon_left_by_a_dead_run_is_reaped_with_its_containers_and_mounts(
    dockerd_factory: DockerdFactory,
) -> None:
    daemon = dockerd_factory()
    port = free_port()
    with closing(daemon.client()) as client:
        client.containers.run(daemon.image, detach=True, network_mode="host", environment={"PORT": str(port)})
    wait_until(lambda: _listening(port), 5, f"backend on {port}")
    assert _mounts_under(daemon.root) and _processes_naming(daemon.root)

    (daemon.root / "owner").write_text("1 0")  # as if the pytest that started it had died
    daemon.proc = None  # and with it our handle: only what is on disk is left
    reap_stale()

    assert not daemon.root.exists()
    assert _processes_naming(daemon.root) == [] and _mounts_under(daemon.root) == []
    assert not _listening(port), "the container's process survived its daemon"


def test_a_private_daemon_restarts_on_the_same_socket_with_its_containers(
    dockerd_factory: DockerdFactory,
) -> None:
    daemon = dockerd_factory()
    with closing(daemon.client()) as client:
        container = client.containers.run(daemon.image, detach=True, network_mode="host",
                                          environment={"PORT": str(free_port())}, restart_policy={"Name": "always"})
    daemon.stop()
    assert _mounts_under(daemon.root) == [], "netns/default must not stay mounted"
    daemon.start()
    with closing(daemon.client()) as client:
        wait_until(lambda: client.containers.get(container.id).status == "running", 15,
                   "the restart policy brings the container back")
