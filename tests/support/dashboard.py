"""`lbgen dashboard` as a process, and a small server-sent-events client to read its stream.

- `start_dashboard(processes, registry, prefix, *extra)` → `Dashboard`: started on a free loopback
  port, returned once it answers `/healthz` (200 or 503).
- `EventReader(url)`: reads `/events` on a thread; `next(event, where)` waits for a matching event.
- `seed(etcd, prefix)`: a small fleet in etcd (a service with a draining and an unhealthy endpoint,
  a rejected spec, an LB node's status); `put(etcd, key, value)` → the revision it made.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

from lbgen.core.lb_node_status import LbStatus, TargetStatus, encode_lb_status
from tests.support.etcd import EtcdServer
from tests.support.lbgen_proc import LbgenProcess, LbgenProcesses
from tests.support.util import free_port, wait_until

START_TIMEOUT = 30.0
EVENT_TIMEOUT = 30.0
ENDPOINT = {"address": "127.0.0.1", "port": 18080, "node": "host-a", "health": "healthy"}
AGES = ("age", "applied_age")


def put(etcd: EtcdServer, key: str, value: Any) -> int:
    """Put `value` (as JSON) and return the revision it made."""
    etcd.etcdctl("put", key, json.dumps(value))
    return int(json.loads(etcd.etcdctl("get", key, "-w", "json"))["header"]["revision"])


def without_ages(value: Any) -> Any:
    """The document with its ages (seconds since a report: they depend on when it was read) removed."""
    if isinstance(value, dict):
        return {k: without_ages(v) for k, v in value.items() if k not in AGES}
    if isinstance(value, list):
        return [without_ages(v) for v in value]
    return value


def seed(etcd: EtcdServer, prefix: str) -> int:
    """The small fleet of the module docstring; returns the last revision."""
    put(etcd, f"{prefix}/services/web/spec", {"listen": 80, "hosts": ["www.example.test"]})
    put(etcd, f"{prefix}/services/web/endpoints/host-a.web.1", ENDPOINT)
    put(etcd, f"{prefix}/services/web/endpoints/host-a.web.2", {**ENDPOINT, "port": 18081, "health": "unhealthy"})
    put(etcd, f"{prefix}/services/bad/spec", {"listen": 0})
    put(etcd, f"{prefix}/drain/host-a.web.1", {"container": "c1"})
    status = LbStatus("lb-1", 3, {"nginx": TargetStatus(3, "", time.time() - 5)}, True, version="0.1.0",
                      updated_at=time.time() - 2)
    return put(etcd, f"{prefix}/lb/lb-1", json.loads(encode_lb_status(status)))


@dataclass
class Dashboard:
    process: LbgenProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Status and body of `GET path` (an HTTP error is an answer too)."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        status, body = self.get(path, headers)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}\n{self.process.output()[-3000:]}"
        return json.loads(body)

    def answers(self) -> bool:
        assert self.process.alive(), f"lbgen dashboard exited:\n{self.process.output()[-3000:]}"
        try:
            return self.get("/healthz")[0] in (200, 503)
        except OSError:
            return False


def start_dashboard(processes: LbgenProcesses, registry: str, prefix: str, *extra: str) -> Dashboard:
    port = free_port()
    process = processes.start("dashboard", "dashboard", "--registry", registry, "--prefix", prefix,
                              "--listen", f"127.0.0.1:{port}", *extra)
    dashboard = Dashboard(process, port)
    wait_until(dashboard.answers, START_TIMEOUT, "lbgen dashboard to answer /healthz")
    return dashboard


class EventReader:
    """A server-sent-events client: parses `event:`/`data:` lines into (event, JSON data)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        connection.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=headers or {})
        self._sock = connection.sock  # to unblock the reader on close (the response's buffer lock is held)
        self.response = connection.getresponse()
        assert self.response.status == 200, f"GET {parts.path}: {self.response.status}"
        self.events: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event, data = "message", []
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: "):
                    data.append(line[len("data: "):])
                elif not line and data:
                    self.events.put((event, json.loads("\n".join(data))))
                    event, data = "message", []
        except (OSError, ValueError):
            pass  # closed by the test or the server
        finally:
            self.events.put(None)

    def next(self, event: str, where: Callable[[Any], bool] = lambda data: True,
             timeout: float = EVENT_TIMEOUT) -> Any:
        """The data of the next `event` for which `where(data)` holds; skips the others."""
        def found() -> Any:
            while True:
                try:
                    item = self.events.get_nowait()
                except queue.Empty:
                    return None
                assert item is not None, f"the event stream ended before a matching {event!r} event"
                if item[0] == event and where(item[1]):
                    return item
        return wait_until(found, timeout, f"a matching {event!r} event")[1]

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone
        self._thread.join(timeout=10)
        self.response.close()
