"""pytest plugin: real nginx and HAProxy instances in temp dirs, tiny HTTP backends, and an applier
wired to the real adapters.

Fixtures:
- `backend`: a factory `backend(name)` → `Backend`; an HTTP server thread on a free 127.0.0.1 port
  that answers every GET with its name.
- `nginx_lb`: a factory `nginx_lb(conf_text_or_callable)` → `Lb`; `nginx -g 'daemon off;'` with pid,
  logs and temp paths under the test's temp dir. `haproxy_lb`: the same for `haproxy -W -S sock`.
- `applier`: `Applier(LocalFiles(), SubprocessRunner(), real_controls)`.
Every process a fixture starts is stopped at teardown (SIGQUIT, then SIGKILL after a deadline).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lbgen.adapters.files import LocalFiles
from lbgen.adapters.kinds.haproxy.control import HaproxyControl
from lbgen.adapters.kinds.nginx import NginxControl
from lbgen.adapters.process import SubprocessRunner, SystemClock
from lbgen.core.settings import Target
from lbgen.ports import Clock, LbControl
from lbgen.services.applier import Applier
from tests.support.util import free_port, wait_until

STOP_SECONDS = 5.0


@dataclass(frozen=True)
class Backend:
    """An HTTP server answering `name` on 127.0.0.1:`port`."""

    name: str
    port: int


@dataclass(frozen=True)
class Lb:
    """A running LB: its config file, pid file (nginx) or master socket (haproxy), and listen port."""

    kind: str
    dir: Path
    conf: Path
    port: int
    pid_file: Path
    master_socket: Path | None
    process: subprocess.Popen[bytes]

    def target(self, **kw: object) -> Target:
        """A target for this LB's config file, its node facts in `vars`, short timeouts."""
        facts = {"pid": str(self.pid_file)} if self.kind == "nginx" else {"master_socket": str(self.master_socket)}
        settings = {"name": self.kind, "dest": str(self.conf), "kind": self.kind, "timeout": 10.0, "vars": facts}
        return Target(template="inline", **{**settings, **kw})  # type: ignore[arg-type]

    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""


def real_controls(target: Target) -> LbControl | None:
    """The wiring the CLI does: the built-in control of the target's kind."""
    kinds: dict[str, Callable[[Target, Clock], LbControl]] = {"nginx": NginxControl, "haproxy": HaproxyControl}
    factory = kinds.get(target.kind)
    return factory(target, SystemClock()) if factory else None


def get(port: int, path: str = "/", timeout: float = 2.0, address: str = "127.0.0.1") -> str:
    """GET http://`address`:`port``path` and return the body (raises on errors and non-2xx)."""
    with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=timeout) as response:
        return str(response.read().decode())


def serves(port: int, body: str, timeout: float = 5.0) -> str:
    """Wait until the LB on `port` answers `body`; returns it."""
    def answer() -> str:
        try:
            return body if get(port) == body else ""
        except OSError:
            return ""
    return wait_until(answer, timeout, f"127.0.0.1:{port} to answer {body!r}", interval=0.01)


def nginx_conf(lb_dir: Path, port: int, http: str) -> str:
    """A whole nginx.conf whose every path is under `lb_dir`; `http` is the http{} body."""
    temp = " ".join(f"{k}_temp_path {lb_dir}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"worker_processes 1;\npid {lb_dir}/nginx.pid;\nerror_log {lb_dir}/error.log notice;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n  access_log off;\n  {temp}\n{http}\n}}\n"
    )


def nginx_proxy(lb_dir: Path, port: int, backend_port: int, extra: str = "") -> str:
    """nginx listening on `port`, proxying everything to the backend on `backend_port`; `extra`
    goes into http{} as well."""
    server = f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{backend_port}; }} }}"
    return nginx_conf(lb_dir, port, server + extra)


def haproxy_proxy(lb_dir: Path, port: int, backend_port: int, extra_bind: str = "") -> str:
    """A whole haproxy.cfg listening on `port`, forwarding to the backend on `backend_port`."""
    return (
        f"global\n  pidfile {lb_dir}/haproxy.pid\n"
        f"  stats socket {lb_dir}/stats.sock mode 600 level admin expose-fd listeners\n"
        "  httpclient.ssl.verify none\n  hard-stop-after 5s\n"
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n"
        f"frontend web\n  bind 127.0.0.1:{port}\n{extra_bind}  default_backend app\n"
        f"backend app\n  server s1 127.0.0.1:{backend_port}\n"
    )


class Answer(BaseHTTPRequestHandler):
    """Answers every GET with the server's `name`."""

    def do_GET(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is not the place for access logs."""


@pytest.fixture
def backend() -> Iterator[Callable[[str], Backend]]:
    servers: list[ThreadingHTTPServer] = []

    def start(name: str) -> Backend:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), name=f"backend-{name}", daemon=True).start()
        servers.append(server)
        return Backend(name, server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


ConfFor = Callable[[Path, int], str]


@pytest.fixture
def nginx_lb(tmp_path: Path) -> Iterator[Callable[[ConfFor], Lb]]:
    """`nginx_lb(conf_for)`: start nginx with `conf_for(dir, port)` as nginx.conf."""
    with _processes() as started:
        def start(conf_for: ConfFor) -> Lb:
            lb_dir, port = _lb_dir(tmp_path, "nginx"), free_port()
            conf = lb_dir / "nginx.conf"
            conf.write_text(conf_for(lb_dir, port))
            argv = [_need("nginx"), "-p", str(lb_dir), "-c", str(conf), "-g", "daemon off;"]
            lb = Lb("nginx", lb_dir, conf, port, lb_dir / "nginx.pid", None, _spawn(argv, lb_dir))
            started.append(lb)
            return _ready(lb)

        yield start


@pytest.fixture
def haproxy_lb(tmp_path: Path) -> Iterator[Callable[[ConfFor], Lb]]:
    """`haproxy_lb(conf_for)`: start HAProxy master-worker with `conf_for(dir, port)` as haproxy.cfg."""
    with _processes() as started:
        def start(conf_for: ConfFor) -> Lb:
            lb_dir, port = _lb_dir(tmp_path, "haproxy"), free_port()
            conf, sock = lb_dir / "haproxy.cfg", lb_dir / "master.sock"
            conf.write_text(conf_for(lb_dir, port))
            argv = [_need("haproxy"), "-W", "-S", f"{sock},mode,600", "-f", str(conf)]
            lb = Lb("haproxy", lb_dir, conf, port, lb_dir / "haproxy.pid", sock, _spawn(argv, lb_dir))
            started.append(lb)
            return _ready(lb)

        yield start


@pytest.fixture
def applier() -> Applier:
    return Applier(LocalFiles(), SubprocessRunner(), real_controls)


class _processes:
    """Collects started LBs; stops every one on exit, even when the test failed."""

    def __enter__(self) -> list[Lb]:
        self.started: list[Lb] = []
        return self.started

    def __exit__(self, *exc: object) -> None:
        for lb in self.started:
            _stop(lb.process)


def _lb_dir(tmp_path: Path, kind: str) -> Path:
    for n in range(100):
        candidate = tmp_path / f"{kind}{n}"
        if not candidate.exists():
            candidate.mkdir()
            return candidate
    raise RuntimeError("too many LBs in one test")


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


def _spawn(argv: list[str], lb_dir: Path) -> subprocess.Popen[bytes]:
    with open(lb_dir / "stderr.log", "wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _ready(lb: Lb) -> Lb:
    """Wait until the master runs workers and the listen port accepts connections."""
    control = real_controls(lb.target())
    assert control is not None

    def up() -> bool:
        if lb.process.poll() is not None:
            raise RuntimeError(f"{lb.kind} exited {lb.process.returncode}: {(lb.dir / 'stderr.log').read_text()}")
        generation = control.observe()
        return generation is not None and bool(generation.workers) and _accepts(lb.port)

    wait_until(up, 10.0, f"{lb.kind} on 127.0.0.1:{lb.port}", interval=0.01)
    return lb


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGTERM: both masters stop their workers), SIGKILL after a deadline."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
