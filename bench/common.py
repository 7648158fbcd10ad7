"""What the benchmarks share: a private etcd, bulk loading, nginx backends and LBs, `lbgen watch` as
a subprocess, a TCP "tap" that timestamps a reload command, and percentiles.

Everything binds 127.0.0.1/127.0.0.2 and lives in one temp dir, removed at the end. The real
services come from the test fixtures' helpers (tests/support), used here outside pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore
from tests.support.etcd import EtcdFactory, EtcdServer
from tests.support.util import free_port, wait_until

TXN_OPS = 128  # etcd's default --max-txn-ops


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lbgen-bench-") as name:
        yield Path(name)


@contextlib.contextmanager
def etcd(root: Path) -> Iterator[tuple[EtcdServer, EtcdStore]]:
    """A private etcd and a client on it."""
    root.mkdir(parents=True, exist_ok=True)
    factory = EtcdFactory(root)
    try:
        server = factory()
        store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", server.client_port),)))
        try:
            yield server, store
        finally:
            store.close()
    finally:
        factory.close()


def bulk_put(store: EtcdStore, items: Sequence[tuple[str, bytes]]) -> None:
    """Write many keys fast: transactions of `TXN_OPS` puts (the bench's setup, not what it measures)."""
    client: Any = store._client  # the etcd client's transaction API; the Store port has no batch put
    for start in range(0, len(items), TXN_OPS):
        ops = [client.transactions.put(k, v) for k, v in items[start:start + TXN_OPS]]
        client.transaction(compare=[], success=ops, failure=[])


def spec(listen: int) -> bytes:
    return json.dumps({"listen": listen, "mode": "http"}).encode()


def endpoint(port: int, weight: int = 1, address: str = "127.0.0.1") -> bytes:
    return json.dumps({"address": address, "port": port, "weight": weight, "node": "bench", "health": "healthy"}).encode()


def registry(prefix: str, services: int, per_service: int, listen: int) -> list[tuple[str, bytes]]:
    """`services` specs on one listen port (host names keep them apart) and their endpoints."""
    items = []
    for i in range(services):
        base = f"{prefix}/services/s{i:05d}"
        items.append((f"{base}/spec", json.dumps({"listen": listen, "mode": "http", "hosts": [f"s{i}.bench.test"]}).encode()))
        items += [(f"{base}/endpoints/e{j:03d}", endpoint(20000 + j, address=f"10.0.{i % 250}.{j + 1}"))
                  for j in range(per_service)]
    return items


def precompile() -> None:
    """Write lbgen's .pyc files, as `pip install` does, even where PYTHONDONTWRITEBYTECODE is set (as
    in this project's sessions): an editable checkout would otherwise compile every lbgen module from
    source in every process a bench starts (~40 ms and ~3 MB of RSS more than an installed lbgen)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lbgen")], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values_s: Sequence[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
            f"min {min(ms):.1f}, max {max(ms):.1f} (n={len(ms)})")


def forks(pid: int) -> list[int]:
    """The running children of `pid` that run its own program: lbgen's render workers (not the
    check or reload commands it runs)."""
    own = Path(f"/proc/{pid}/cmdline").read_bytes()
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if Path(f"/proc/{child}/cmdline").read_bytes() == own:
                    found.append(int(child))
            except OSError:
                pass  # ended meanwhile
    return found


def forks_cpu_s(pid: int) -> float:
    """CPU seconds of `pid`'s running render workers, to the nanosecond (/proc/PID/schedstat: a
    worker has one thread; /proc/PID/stat counts in clock ticks of 10 ms)."""
    total = 0
    for child in forks(pid):
        try:
            total += int(Path(f"/proc/{child}/schedstat").read_text().split()[0])
        except OSError:
            pass  # ended meanwhile: its CPU moves to the reaped children's
    return total / 1e9


def pss_mb(pid: int) -> float:
    """The proportional set size of a process in MB: its shared pages split among their sharers
    (a forked render worker and its watcher share most of theirs)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# --- LB processes ------------------------------------------------------------------------------------


def nginx_vars(d: Path, address: str = "127.0.0.1") -> dict[str, object]:
    return {"listen_address": address, "pid": f"{d}/nginx.pid", "error_log": f"{d}/nginx-error.log",
            "access_log": "off", "temp_dir": str(d), "worker_processes": 1, "worker_shutdown_timeout": "2s"}


def haproxy_vars(d: Path, address: str = "127.0.0.2") -> dict[str, object]:
    return {"listen_address": address, "pid": f"{d}/haproxy.pid", "stats_socket": f"{d}/stats.sock",
            "master_socket": f"{d}/master.sock", "hard_stop_after": "2s"}


class Processes:
    """Processes started by a bench; all are stopped (SIGTERM, then SIGKILL) on exit, in start order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started.append(process)
        return process

    def backends(self, names: Sequence[str]) -> dict[str, int]:
        """One nginx answering `return 200 "<name>"` on a port per name (busybox httpd forks per connection: too slow for load)."""
        ports = {name: free_port() for name in names}
        servers = "".join(f'server {{ listen 127.0.0.1:{p}; return 200 "{n}"; }}\n' for n, p in ports.items())
        conf = self.root / "backends.conf"
        conf.write_text(f"pid {self.root}/backends.pid; error_log {self.root}/backends.log; worker_processes 1;\n"
                        f"events {{}}\nhttp {{ access_log off; {servers} }}\n")
        self.spawn("backends", ["nginx", "-c", str(conf), "-g", "daemon off;"])
        wait_until(lambda: all(get("127.0.0.1", p) == n for n, p in ports.items()), 10, "the backends")
        return ports

    def watch(self, settings: Path, log_level: str = "info") -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "lbgen", "--log-level", log_level, "watch", "-c", str(settings),
                "--metrics-addr", "off"]
        return self.spawn("watch", argv, env)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def wait_log(self, name: str, text: str, timeout: float = 60.0) -> None:
        wait_until(lambda: text in self.log(name), timeout, f"{text!r} in {name}.log")


def get(address: str, port: int, timeout: float = 1.0) -> str:
    """The body answered on http://address:port/ ("" on any error)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=timeout) as response:
            return str(response.read().decode())
    except OSError:
        return ""


class Tap:
    """A TCP listener on 127.0.0.1; a reload command `busybox nc 127.0.0.1 <port>` connecting to it
    marks the moment the watcher ran its reload command (`wait()` returns that monotonic time)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.argv = ["/bin/busybox", "nc", "127.0.0.1", str(self.port)]

    def wait(self, timeout: float = 30.0) -> float:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        at = time.monotonic()
        conn.close()  # nc exits: the reload command succeeds
        return at

    def drain(self) -> int:
        """Accept and count pending connections without waiting."""
        count = 0
        self.sock.settimeout(0.0)
        with contextlib.suppress(BlockingIOError, socket.timeout):
            while True:
                self.sock.accept()[0].close()
                count += 1
        return count

    def close(self) -> None:
        self.sock.close()


def write_settings(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs ({cpu}), load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
