"""A private `dockerd` for the tests: its own data-root, exec-root and socket; no bridge, no iptables.

What this relies on (measured on this project's 2 vCPU test hosts): as root it answers `/_ping` within
0.5-3 s; after SIGTERM it needs 1-3 s to stop, and killed sooner it orphans its containerd; when it
has exited, `<exec-root>/netns/default` stays bind-mounted. Each daemon lives in one short temp dir
(`/tmp/lbd-XXXXXXXX`: unix socket paths are limited to 108 bytes) that records which pytest process
owns it, so the next run can tear down whatever an aborted run left behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

import docker
import requests

from tests.support.util import wait_until

log = logging.getLogger(__name__)

BASE = Path("/tmp")
PREFIX = "lbd-"
API_VERSION = "1.41"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of a live `pid` (field 22 of /proc/pid/stat), which tells a live
    owner from a reused pid; None when there is no such process or only its zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


class Dockerd:
    """One daemon under `root`: `start()`, `stop()` (keeps its containers), `destroy()` (removes all)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.image = ""  # the test image's tag, once a fixture has built it here

    @classmethod
    def create(cls) -> Dockerd:
        with _base_lock():  # a concurrent `reap_stale` must not take the new dir for an orphan
            root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=BASE))
            (root / "owner").write_text(f"{os.getpid()} {_proc_start_time(os.getpid())}")
        (root / "daemon.json").write_text("{}")  # never read /etc/docker/daemon.json: no mirrors, no hosts
        return cls(root)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def argv(self) -> list[str]:
        return [
            "dockerd",
            "--config-file", str(self.root / "daemon.json"),
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "-H", self.url,
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--userland-proxy=false",
            "--shutdown-timeout=3",  # running containers get 3 s on daemon stop, not 15
        ]

    def client(self, timeout: float = 30.0) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version=API_VERSION, timeout=timeout)

    def start(self) -> float:
        """Start the daemon and wait until `/_ping` answers; returns the seconds it took."""
        began = time.monotonic()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches pytest only; the fixture stops dockerd in order
            )
        wait_until(self._ready, START_TIMEOUT, f"dockerd at {self.url} answering /_ping")
        return time.monotonic() - began

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"dockerd exited {self.proc.returncode}: " + " | ".join(tail))
        try:
            with closing(self.client(timeout=1)) as client:
                return bool(client.ping())
        except (docker.errors.DockerException, requests.RequestException):
            return False

    def stop(self) -> float:
        """SIGTERM and wait for the exit (never sooner: containerd would be orphaned), then tidy up
        what it leaves: stray containerd/shims and mounts. Returns the seconds the stop took."""
        began = time.monotonic()
        pid = self.proc.pid if self.proc else self._pid_from_file()
        if pid is not None and _signal(pid, signal.SIGTERM):
            if not _wait_exit(pid, self.proc, STOP_TIMEOUT):
                log.warning("dockerd %s still running %ss after SIGTERM: killing it", pid, STOP_TIMEOUT)
                _signal(pid, signal.SIGKILL)
                _wait_exit(pid, self.proc, 5)
        self.proc = None
        _kill_tree(_pids_mentioning(self.root / "exec"))
        _unmount_under(self.root)
        return time.monotonic() - began

    def _pid_from_file(self) -> int | None:
        """The pidfile's pid, if that process is still this daemon (a stale file's pid may be reused)."""
        pid = _read_pid(self.root / "dockerd.pid")
        return pid if pid in _pids_mentioning(self.root) else None

    def remove_all_containers(self) -> None:
        """Everything on this private daemon was created by the tests."""
        with closing(self.client()) as client:
            for container in client.containers.list(all=True):
                container.remove(force=True, v=True)

    def destroy(self) -> None:
        """Remove its containers (if it still answers), stop it, delete its directory."""
        try:
            if self.socket.exists():
                self.remove_all_containers()
        except (docker.errors.DockerException, requests.RequestException) as e:
            log.warning("removing containers of %s: %s", self.url, e)
        finally:
            self.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def reap_stale() -> None:
    """Tear down daemons whose pytest owner is gone (an aborted earlier run). The lock keeps
    concurrent xdist workers from reaping the same one twice, or one just being created."""
    with _base_lock():
        for root in BASE.glob(PREFIX + "*"):
            if root.is_dir() and not _owner_alive(root / "owner"):
                log.warning("removing dockerd left by an earlier run: %s", root)
                Dockerd(root).destroy()


@contextmanager
def _base_lock() -> Iterator[None]:
    with (BASE / "lbd.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _owner_alive(owner: Path) -> bool:
    try:
        pid, started = owner.read_text().split()
    except (OSError, ValueError):
        return False
    return _proc_start_time(int(pid)) == started


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_exit(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        wait_until(lambda: _proc_start_time(pid) is None, timeout, f"pid {pid} to exit")
    except TimeoutError:
        return False
    return True


def _process_table() -> dict[int, tuple[int, bytes]]:
    """pid → (parent pid, raw cmdline) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def _pids_mentioning(root: Path) -> list[int]:
    """containerd and its shims name the exec-root on their command line (a client of the daemon
    socket, such as an agent under test, does not)."""
    needle = os.fsencode(root)
    return [pid for pid, (_, cmdline) in _process_table().items() if needle in cmdline]


def _kill_tree(pids: list[int]) -> None:
    """SIGKILL `pids` and all their descendants, children first: a shim's containers would
    otherwise be re-parented to init and keep their ports."""
    table = _process_table()
    order: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        order.append(pid)
        todo.extend(child for child, (parent, _) in table.items() if parent == pid)
    for pid in reversed(order):
        _signal(pid, signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    """Unmount every mount point under `root`, deepest first (netns/default, data-root binds, overlays)."""
    prefix = str(root) + "/"
    mounts = [
        line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]
    for point in sorted((m for m in mounts if (m + "/").startswith(prefix)), key=len, reverse=True):
        result = subprocess.run(["umount", point], capture_output=True, timeout=10, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=10, check=False)
