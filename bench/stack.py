"""The processes a system bench runs, each started from a temp dir and stopped on every exit.

`Stack` is a context manager: etcd (tests/support/etcd.py), a private dockerd with the backend
image (tests/support/dockerd.py, images), nginx `return 200` backends, `lbgen watch` and
`lbgen agent` subprocesses, and nginx / HAProxy started on what their watcher rendered. Leaving
the block — normally, on an exception, on Ctrl-C or on SIGTERM — stops all of them in reverse
order and deletes the temp dir (kept, with every log, when the bench failed).

Loopback only: everything listens on 127.0.0.1 free ports.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import common  # noqa: E402  (bench/common.py)
from lbgen.adapters.etcd_store import EtcdConfig, EtcdStore  # noqa: E402
from tests.support.dockerd import Dockerd, reap_stale  # noqa: E402
from tests.support.etcd import EtcdServer  # noqa: E402
from tests.support.images import build_backend_image  # noqa: E402
from tests.support.util import free_port, wait_until  # noqa: E402

STOP_SECONDS = 10.0
DEFAULT_WAIT = "100ms:1s"  # lbgen's own default quiescence (settings.py), stated explicitly
TEMPLATES = {"nginx": "nginx.conf.j2", "haproxy": "haproxy.cfg.j2"}
CHECKS = {"nginx": ["nginx", "-t", "-q", "-c", "{staged}"], "haproxy": ["haproxy", "-c", "-q", "-f", "{staged}"]}


def new_prefix(name: str) -> str:
    """A registry prefix of its own, so a change under it reloads only its LB."""
    return f"/bench/{name}-{uuid.uuid4().hex[:8]}"


def machine() -> str:
    """bench/common.py's CPU count, model and load, plus memory and the LB/etcd versions."""
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = [_version(["nginx", "-v"], r"nginx/(\S+)"), _version(["haproxy", "-v"], r"version (\S+)"),
                _version(["etcd", "--version"], r"etcd Version: (\S+)")]
    return (f"{common.machine()}, {mem_kb / 2**20:.0f} GiB RAM; nginx {versions[0]}, "
            f"HAProxy {versions[1]}, etcd {versions[2]}, Python {sys.version.split()[0]}")


def _version(argv: list[str], pattern: str) -> str:
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    found = re.search(pattern, result.stdout + result.stderr)
    return found.group(1) if found else "?"


def http_get(port: int, host: str = "bench", timeout: float = 2.0) -> tuple[int, str]:
    """One request on a new connection to 127.0.0.1:`port`: (status, body); (0, error) on a socket error."""
    return _get_path(port, "/", host, timeout)


def _get_path(port: int, path: str, host: str = "bench", timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)
    finally:
        conn.close()


@dataclass
class Proc:
    """A process the stack started, with its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{self.name} exited {self.popen.returncode}: " + " | ".join(tail))


@dataclass
class Watcher:
    """A `lbgen watch` for one target of `kind`, its registry prefix, metrics port and rendered config."""

    kind: str
    prefix: str
    metrics_port: int
    dir: Path
    proc: Proc
    wait: str = DEFAULT_WAIT

    @property
    def conf(self) -> Path:
        return self.dir / f"{self.kind}.conf"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of its /metrics: (name, sorted labels) → value."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def reloads(self) -> int:
        return int(self.metric("lbgen_watcher_reloads_total", target=self.kind))

    def runtime_updates(self) -> int:
        """Passes applied through HAProxy's runtime API, without a reload."""
        return int(self.metric("lbgen_watcher_runtime_updates_total", target=self.kind))

    def lag(self) -> tuple[float, int]:
        """The watcher's own apply-lag histogram: (sum of seconds, count) so far."""
        samples = self.metrics()
        key = (("target", self.kind),)
        return (samples.get(("lbgen_watcher_apply_lag_seconds_sum", key), 0.0),
                int(samples.get(("lbgen_watcher_apply_lag_seconds_count", key), 0)))

    def applied_revision(self) -> int:
        return int(self.metric("lbgen_watcher_applied_revision", target=self.kind))

    def wait_applied(self, revision: int, timeout: float = 30.0) -> None:
        """Until the LB runs a config of registry `revision` or later (the watcher verified its reload)."""
        def applied() -> bool:
            self.proc.check_alive()
            return self.applied_revision() >= revision
        wait_until(applied, timeout, f"{self.kind} watcher to apply revision {revision}", interval=0.005)


@dataclass
class Lb:
    kind: str
    port: int
    proc: Proc


class Stack:
    """Starts what a bench needs; `with Stack() as stack:` stops it all however the block ends."""

    def __init__(self, keep_logs: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lbgen-bench-"))
        self.keep_logs = keep_logs
        self._exit = ExitStack()
        self._previous: dict[signal.Signals, Any] = {}
        self.etcd_server: EtcdServer | None = None

    def __enter__(self) -> Stack:
        # SIGINT too: started in the background by a shell, Python would inherit it ignored.
        self._previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig in self._previous:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        try:
            self._exit.close()
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
        if kind is None and not self.keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"logs kept in {self.dir}", file=sys.stderr)

    # --- services ----------------------------------------------------------------------------

    def etcd(self) -> EtcdServer:
        server = EtcdServer(self._subdir("etcd"))
        self._exit.callback(server.stop)
        server.start()
        self.etcd_server = server
        return server

    def store(self) -> EtcdStore:
        """A client of the stack's etcd, for the bench's own writes."""
        assert self.etcd_server is not None, "start etcd first"
        store = EtcdStore(EtcdConfig(endpoints=(("127.0.0.1", self.etcd_server.client_port),)))
        self._exit.callback(store.close)
        return store

    def dockerd(self) -> Dockerd:
        """A private dockerd (no bridge, no iptables) with the backend image built on it."""
        reap_stale()
        daemon = Dockerd.create()
        self._exit.callback(daemon.destroy)
        daemon.start()
        with closing(daemon.client()) as client:
            daemon.image = build_backend_image(client)
        return daemon

    def backends(self, count: int) -> list[int]:
        """`count` nginx instances answering `return 200 "b<n>"`, each on its own port; their ports."""
        ports = []
        for n in range(count):
            directory, port = self._subdir(f"backend{n}"), free_port()
            conf = directory / "nginx.conf"
            conf.write_text(_backend_conf(directory, port, f"b{n}"))
            self._spawn(f"backend{n}", ["nginx", "-p", str(directory), "-c", str(conf), "-g", "daemon off;"])
            wait_until(lambda p=port: http_get(p)[0] == 200, 10, f"backend b{n} on port {port}")
            ports.append(port)
        return ports

    def watcher(self, kind: str, prefix: str, wait: str = DEFAULT_WAIT) -> Watcher:
        """`lbgen watch` of one `kind` target on the default template, reading `prefix`."""
        assert self.etcd_server is not None, "start etcd first"
        directory, metrics_port = self._subdir(f"lb-{kind}"), free_port()
        node = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
        settings = _watch_settings(directory, kind, wait)
        proc = self.lbgen(f"watch-{kind}", "watch", "-c", str(settings), "--registry", self.etcd_server.url,
                           "--prefix", prefix, "--node", node, "--metrics-addr", f"127.0.0.1:{metrics_port}")
        watcher = Watcher(kind, prefix, metrics_port, directory, proc, wait)

        def rendered() -> bool:
            proc.check_alive()
            return watcher.conf.exists()
        wait_until(rendered, 30, f"{kind} watcher to render {watcher.conf}")
        return watcher

    def agent(self, daemon: Dockerd, prefix: str) -> Proc:
        assert self.etcd_server is not None, "start etcd first"
        metrics_port = free_port()
        proc = self.lbgen("agent", "agent", "--registry", self.etcd_server.url, "--prefix", prefix,
                           "--node", f"bench-host-{uuid.uuid4().hex[:8]}", "--host-ip", "127.0.0.1",
                           "--docker-host", daemon.url, "--metrics-addr", f"127.0.0.1:{metrics_port}")

        def ready() -> bool:
            proc.check_alive()
            return _get_path(metrics_port, "/healthz")[0] == 200
        wait_until(ready, 30, "the agent's /healthz")
        return proc

    def lb(self, watcher: Watcher, port: int) -> Lb:
        """nginx or HAProxy (master-worker) started on the config `watcher` rendered, which listens on `port`."""
        conf = str(watcher.conf)
        argv = (["nginx", "-c", conf, "-g", "daemon off;"] if watcher.kind == "nginx"
                else ["haproxy", "-W", "-S", f"{watcher.dir}/master.sock,mode,600", "-f", conf])
        proc = self._spawn(watcher.kind, argv)

        def up() -> bool:
            proc.check_alive()
            return http_get(port)[0] != 0
        wait_until(up, 10, f"{watcher.kind} on 127.0.0.1:{port}")
        return Lb(watcher.kind, port, proc)

    # --- plumbing ----------------------------------------------------------------------------

    def lbgen(self, name: str, *args: str, log_format: str = "text") -> Proc:
        """`python -m lbgen ARGS` from this tree, logging at info level to `name`.log."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "lbgen", "--log-level", "info", "--log-format", log_format, *args]
        return self._spawn(name, argv, env=env)

    def cleanup(self, fn: Any, *args: Any) -> None:
        """Call `fn(*args)` when the stack ends (before what was started earlier is stopped)."""
        self._exit.callback(fn, *args)

    def subdir(self, name: str) -> Path:
        return self._subdir(name)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.dir / f"{name}.log"
        with log.open("wb") as out:
            # Own session: Ctrl-C reaches the bench only, which then stops everything in order.
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.dir, start_new_session=True)
        self._exit.callback(_stop, popen)
        return Proc(name, popen, log)

    def _subdir(self, name: str) -> Path:
        path = self.dir / name
        path.mkdir()
        return path


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stop(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx, HAProxy, lbgen: fast, clean exit), SIGKILL after a deadline."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _backend_conf(directory: Path, port: int, name: str) -> str:
    temp = " ".join(f"{k}_temp_path {directory}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"worker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n  {temp}\n  keepalive_requests 1000000;\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"{name}\\n\"; }} }}\n}}\n"
    )


def _watch_settings(directory: Path, kind: str, wait: str) -> Path:
    """Settings for one target of `kind` on the default template, every path in `directory`."""
    if kind == "nginx":
        facts: dict[str, Any] = {"pid": f"{directory}/nginx.pid", "error_log": f"{directory}/error.log",
                                 "access_log": "off", "temp_dir": str(directory)}
    else:
        facts = {"pid": f"{directory}/haproxy.pid", "stats_socket": f"{directory}/stats.sock",
                 "master_socket": f"{directory}/master.sock", "hard_stop_after": "10s"}
    target = {"name": kind, "kind": kind, "template": str(ROOT / "templates" / TEMPLATES[kind]),
              "dest": str(directory / f"{kind}.conf"), "check": CHECKS[kind], "timeout": "10s",
              "vars": {"listen_address": "127.0.0.1", **facts}}
    path = directory / "lbgen.yaml"
    path.write_text(yaml.safe_dump({"registry": "file:/unused", "wait": wait, "guard": "off", "targets": [target]}))
    return path
