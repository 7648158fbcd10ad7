"""lbgen's one small HTTP server: a route table (`lbgen.core.web`) on a threading `http.server`.

Every daemon serves through it: `/metrics` and `/healthz` of the agent and the watcher, and the
whole dashboard. One thread per connection (daemon threads: a stuck client never holds up exit);
a streamed response (server-sent events) is written and flushed chunk by chunk until the stream
ends or the client leaves, and the stream's iterator is then closed so its `finally` runs.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

from lbgen.core.web import ListenAddress, Request, Response, Route, dispatch, text
from lbgen.errors import UsageError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # seconds a client may take to send its request or read a chunk


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: Mapping[str, Route]
    headers: Mapping[str, str]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT

    def version_string(self) -> str:
        return "lbgen"

    def do_GET(self) -> None:
        self._answer()

    # The route table answers every method: GET and HEAD, or 405 (every lbgen server is read-only).
    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _answer(self) -> None:
        url = urlsplit(self.path)
        request = Request(self.command, url.path, dict(reversed(parse_qsl(url.query))),
                          {name.lower(): value for name, value in self.headers.items()})
        try:
            response = dispatch(self.server.routes, request)
        except Exception:
            log.exception("%s %s: the route failed", self.command, url.path[:100])
            response = text(500, "internal error (logged)")
        self._send_head(response)
        if self.command == "HEAD":
            _close(response.stream)
        elif response.stream is not None:
            self._send_stream(response.stream)
        else:
            self.wfile.write(response.body)

    def _send_head(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        if response.stream is None:
            self.send_header("Content-Length", str(len(response.body)))
        for name, value in {**self.server.headers, **response.headers}.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_stream(self, stream: Iterable[bytes]) -> None:
        self.close_connection = True
        try:
            for chunk in stream:
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError as e:  # the client went away (broken pipe, reset, timeout)
            log.debug("%s: stream ended: %s", self.path.partition("?")[0][:100], e)
        finally:
            _close(stream)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes and page polls must not fill a daemon's log; the query (a token) is never logged."""
        log.debug("http %s %s", self.address_string(), (format % args).partition("?")[0][:200])


def _close(stream: Iterable[bytes] | None) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


class HttpServer:
    """A running server; `address` is the bound one (port 0 picks a free port)."""

    def __init__(self, address: ListenAddress, routes: Mapping[str, Route], headers: Mapping[str, str]) -> None:
        server_class = _Server6 if ":" in address.host else _Server
        self._server = server_class((address.host, address.port), _Handler)
        self._server.routes = dict(routes)
        self._server.headers = dict(headers)
        self.address = ListenAddress(address.host, self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close the socket; requests still running end with their threads."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_http_server(address: ListenAddress, routes: Mapping[str, Route], what: str,
                      headers: Mapping[str, str] | None = None) -> HttpServer:
    """Serve `routes` on `address` in the background; `UsageError` naming `what` if it cannot bind.
    `headers` go on every response (a route's own header of the same name wins)."""
    try:
        server = HttpServer(address, routes, {"X-Content-Type-Options": "nosniff", **(headers or {})})
    except OSError as e:
        raise UsageError(f"{what} {address}: {e.strerror or e}") from e
    log.info("%s on http://%s (%s)", what, server.address, ", ".join(sorted(routes)))
    return server
