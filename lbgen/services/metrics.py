"""Prometheus metrics and a health endpoint on one loopback HTTP port, for any lbgen daemon.

`GET /metrics` serves a `CollectorRegistry`; `GET /healthz` answers 200 `ok` or 503 with one line
per problem that `health_check_fn` reports (e.g. "etcd: connection refused"). The server runs in
daemon threads; `close()` stops it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from lbgen.errors import UsageError

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Iterable[str]]


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen_address(text: str) -> ListenAddress | None:
    """`127.0.0.1:9101`, `[::1]:9101` or `:9101` (loopback) → an address; `off` or `` → None."""
    if text.strip().lower() in ("", "off", "none"):
        return None
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        valid = bool(sep) and port.isdigit() and 0 <= int(port) <= 65535
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(f"metrics address {text!r}: expected IP:PORT (e.g. 127.0.0.1:9101) or off")
    return ListenAddress(host, int(port))


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds must not fill the daemon's log."""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics %s", format % args)


class _Server(ThreadingWSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Health:
    """Named components, each up or down with a reason; thread-safe, read by `/healthz`."""

    def __init__(self, *components: str) -> None:
        self._lock = threading.Lock()
        self._problems = {name: "not connected yet" for name in components}

    def up(self, component: str) -> None:
        with self._lock:
            self._problems[component] = ""

    def down(self, component: str, reason: str) -> None:
        with self._lock:
            self._problems[component] = reason

    def is_up(self, component: str) -> bool:
        with self._lock:
            return not self._problems.get(component)

    def problems(self) -> list[str]:
        """One `component: reason` line per component that is down."""
        with self._lock:
            return [f"{name}: {reason}" for name, reason in sorted(self._problems.items()) if reason]


class MetricsServer:
    """A running metrics + health endpoint; `address` is the bound one (port 0 picks a free port)."""

    def __init__(self, address: ListenAddress, registry: CollectorRegistry, health_check_fn: HealthCheck) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                problems = list(health_check_fn())
                body = ("\n".join(problems) if problems else "ok").encode() + b"\n"
                status = "503 Service Unavailable" if problems else "200 OK"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [body]
            return metrics_app(environ, start_response)

        server_class = _Server6 if ":" in address.host else _Server
        self._server = make_server(address.host, address.port, app, server_class, handler_class=_QuietHandler)
        self.address = ListenAddress(address.host, self._server.server_port)
        # close() waits for serve_forever's next poll: 0.1 s (not the default 0.5) keeps SIGTERM of
        # a daemon under a second (issue 10), for 10 idle wake-ups a second.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="metrics-http",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    address: ListenAddress, registry: CollectorRegistry, health_check_fn: HealthCheck
) -> MetricsServer:
    """Serve `/metrics` and `/healthz` on `address` in the background; raises `UsageError` if it cannot bind."""
    try:
        server = MetricsServer(address, registry, health_check_fn)
    except OSError as e:
        raise UsageError(f"metrics address {address}: {e.strerror or e}") from e
    log.info("metrics and /healthz on http://%s", server.address)
    return server

