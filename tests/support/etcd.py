"""pytest plugin: real etcd 3.4 servers on free 127.0.0.1 ports, with temp data dirs.

- `etcd_server` (session): one shared server; tests isolate themselves with `etcd_prefix`.
- `etcd_factory`: servers a test owns, to stop, kill, freeze, restart or wipe (outages, restores).
- `etcd_prefix`: a unique key prefix per test, so tests can share a server under pytest-xdist.

Without `/usr/bin/etcd` the tests are skipped, except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from lbgen.core.values import WatchEvent
from lbgen.ports import Watch
from tests.support.util import free_port, wait_until

ETCD_BINARY = os.environ.get("LBGEN_TEST_ETCD", "/usr/bin/etcd")
ETCDCTL_BINARY = os.environ.get("LBGEN_TEST_ETCDCTL", "/usr/bin/etcdctl")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def require_binary(path: str, what: str) -> None:
    """Skip when a real service binary is missing, but fail in CI where nothing may be skipped."""
    if shutil.which(path):
        return
    message = f"{what} not found at {path}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: a missing component is a failure)")
    pytest.skip(message)


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and a certificate/key pair it signed, valid for 127.0.0.1 as server and client."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA and one P-256 certificate (SAN IP:127.0.0.1), made with the openssl CLI."""
    require_binary("openssl", "openssl")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "cert.pem", directory / "cert.key", directory / "cert.csr"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        ["req", "-x509", *new_key, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=lbgen-test-ca"],
        ["req", *new_key, "-keyout", key, "-out", csr, "-subj", "/CN=lbgen-test"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True, timeout=30)
    return TlsFiles(ca, cert, key)


@dataclass
class EtcdServer:
    """One etcd member we started. Ports and data dir survive `stop()`/`start()` (a restart)."""

    workdir: Path
    name: str = "lbgen-test"
    cluster: str = ""  # --initial-cluster; empty: this member alone
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    tls: TlsFiles | None = None
    client_cert_auth: bool = False
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    process: subprocess.Popen[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "etcd.log"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        """The registry URL lbgen takes (`--registry`)."""
        return f"{'https' if self.scheme == 'https' else 'etcd'}://127.0.0.1:{self.client_port}"

    def argv(self) -> list[str]:
        peer = self.peer_url
        return [
            ETCD_BINARY, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.cluster or f"{self.name}={peer}", "--initial-cluster-token", self.token,
            "--auto-compaction-retention=0", "--logger=zap", "--log-level=warn",
            *self._tls_args(), *self.extra_args,
        ]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        args = ["--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
        if self.client_cert_auth:
            args += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.ca)]
        return args

    def start(self, wait: bool = True) -> None:
        """Start the process (again) and wait until it serves (`/health`)."""
        assert self.process is None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        wait_until(self._healthy, timeout, f"etcd on {self.client_url} to be healthy")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"etcd exited {self.process.returncode}: {self._log_tail()}")
        try:
            context = self.tls.client_context() if self.tls else None
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1, context=context) as response:
                return b'"true"' in response.read()
        except OSError:
            return False

    def _log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"

    def etcdctl(self, *args: str) -> str:
        """Run etcdctl (API v3) against this server; its output, or `CalledProcessError`."""
        tls = ["--cacert", str(self.tls.ca), "--cert", str(self.tls.cert), "--key", str(self.tls.key)] if self.tls else []
        argv = [ETCDCTL_BINARY, "--endpoints", self.client_url, *tls, *args]
        env = {**os.environ, "ETCDCTL_API": "3"}
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30, env=env).stdout

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a deadline; waits for the process to be gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: an etcd that dies without closing anything cleanly."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the process is there but never answers (a partition, a hung host)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def wipe(self) -> None:
        """Stop, delete the data and start empty: an etcd restored from scratch (new cluster id)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.token = uuid.uuid4().hex
        self.start()


class EtcdFactory:
    """Starts servers for one test and removes every process and directory at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[EtcdServer] = []

    def __call__(
        self, extra_args: tuple[str, ...] = (), tls: TlsFiles | None = None, client_cert_auth: bool = False
    ) -> EtcdServer:
        workdir = Path(tempfile.mkdtemp(prefix="etcd-", dir=self.root))
        server = EtcdServer(workdir, extra_args=extra_args, tls=tls, client_cert_auth=client_cert_auth)
        self.servers.append(server)
        server.start()
        return server

    def cluster(self, size: int = 3) -> list[EtcdServer]:
        """`size` members forming one cluster; they start together (quorum), then are polled healthy."""
        members = [
            EtcdServer(Path(tempfile.mkdtemp(prefix=f"etcd-{n}-", dir=self.root)), name=f"member-{n}")
            for n in range(size)
        ]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for member in members:
            member.cluster, member.token = cluster, members[0].token
            self.servers.append(member)
            member.start(wait=False)
        for member in members:
            member.wait_healthy()
        return members

    def close(self) -> None:
        for server in self.servers:
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """The shared etcd of the test session. Never stop it: use `etcd_factory` for that."""
    require_binary(ETCD_BINARY, "etcd")
    factory = EtcdFactory(tmp_path_factory.mktemp("etcd-session"))
    try:
        yield factory()
    finally:
        factory.close()


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[EtcdFactory]:
    """`etcd_factory()` → a fresh server this test may stop, kill, freeze or wipe."""
    require_binary(ETCD_BINARY, "etcd")
    factory = EtcdFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix no other test uses, e.g. `/t/3f2a.../lbgen` (without a trailing slash)."""
    return f"/t/{uuid.uuid4().hex[:12]}/lbgen"


class WatchReader:
    """Iterates a `Watch` on a thread so a test can wait for events or an error with a deadline."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self._items: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="watch-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self.watch:
                self._items.put(batch)
        except Exception as e:  # handed to the test, which asserts on it
            self._items.put(e)

    def collect(self, count: int, timeout: float = 10.0) -> tuple[list[WatchEvent], Exception | None]:
        """Up to `count` events (across batches), and the error if the watch failed before them."""
        events: list[WatchEvent] = []
        deadline = time.monotonic() + timeout
        while len(events) < count:
            item = self._next(deadline, f"{count} watch events (got {len(events)})")
            if isinstance(item, Exception):
                return events, item
            events.extend(item)  # type: ignore[arg-type]
        return events, None

    def events(self, count: int, timeout: float = 10.0) -> list[WatchEvent]:
        """The next `count` events; fails at the deadline or on a watch error."""
        events, error = self.collect(count, timeout)
        if error is not None:
            raise AssertionError(f"watch failed after {len(events)} events: {error!r}") from error
        return events

    def error(self, timeout: float = 10.0) -> Exception:
        """The exception the watch raised, skipping any events still queued before it."""
        deadline = time.monotonic() + timeout
        while not isinstance(item := self._next(deadline, "the watch to fail"), Exception):
            pass
        return item

    def _next(self, deadline: float, what: str) -> object:
        try:
            return self._items.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            raise AssertionError(f"timed out waiting for {what}") from None

    def close(self) -> None:
        self.watch.cancel()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the watch did not end after cancel()"
