"""lbgen's one HTTP server (`lbgen.adapters.http_server`) on a loopback port: the route table,
common headers, streamed responses, a client that leaves mid-stream, and a prompt close."""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Iterator

import pytest

from lbgen.adapters.http_server import HttpServer, start_http_server
from lbgen.core.web import ListenAddress, Request, Response, Route, json_response
from lbgen.errors import UsageError
from tests.support.util import wait_until

ANY_PORT = ListenAddress("127.0.0.1", 0)


class Ticker:
    """A stream that yields on demand and records when it was closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.release = threading.Semaphore(0)

    def __iter__(self) -> Iterator[bytes]:
        yield b"first\n"
        while self.release.acquire(timeout=10):
            yield b"tick\n"

    def close(self) -> None:
        self.closed.set()


def boom(request: Request) -> Response:
    raise RuntimeError("a bug")


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def server(ticker: Ticker) -> Iterator[HttpServer]:
    routes: dict[str, Route] = {
        "/json": lambda request: json_response({"query": dict(request.query), "agent": request.headers.get("x-a")}),
        "/stream": lambda request: Response(200, content_type="text/event-stream", stream=ticker),
        "/boom": boom,
        "/own": lambda request: Response(200, b"x", headers={"X-Frame-Options": "SAMEORIGIN"}),
    }
    server = start_http_server(ANY_PORT, routes, "test address", {"X-Frame-Options": "DENY"})
    yield server
    server.close()


def get(server: HttpServer, path: str, method: str = "GET", headers: dict | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.address.port, timeout=10)
    conn.request(method, path, headers=headers or {})
    return conn.getresponse()


def test_routes_answer_with_the_request_they_saw(server: HttpServer) -> None:
    response = get(server, "/json?b=2&token=t&b=3", headers={"X-A": "v"})
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.read().decode().replace(" ", "").replace("\n", "") == '{"query":{"b":"2","token":"t"},"agent":"v"}'


@pytest.mark.parametrize(("path", "method", "status"), [
    ("/missing", "GET", 404), ("/json", "POST", 405), ("/json", "PUT", 405), ("/boom", "GET", 500),
], ids=["unknown", "post", "put", "route raises"])
def test_errors(server: HttpServer, path: str, method: str, status: int) -> None:
    response = get(server, path, method)
    assert response.status == status
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert b"a bug" not in response.read()


def test_common_headers_go_on_every_answer_and_a_route_can_override_them(server: HttpServer) -> None:
    assert get(server, "/missing").getheader("X-Frame-Options") == "DENY"
    assert get(server, "/own").getheader("X-Frame-Options") == "SAMEORIGIN"
    assert get(server, "/own").getheader("Server") == "lbgen"


def test_head_sends_no_body_and_closes_the_stream(server: HttpServer, ticker: Ticker) -> None:
    response = get(server, "/stream", "HEAD")
    assert (response.status, response.read()) == (200, b"")
    assert ticker.closed.wait(10)


def test_a_stream_is_flushed_chunk_by_chunk(server: HttpServer, ticker: Ticker) -> None:
    response = get(server, "/stream")
    assert response.readline() == b"first\n"  # arrives before the stream yields again
    ticker.release.release()
    assert response.readline() == b"tick\n"
    response.close()


def test_a_client_leaving_mid_stream_closes_the_stream(server: HttpServer, ticker: Ticker) -> None:
    sock = socket.create_connection(("127.0.0.1", server.address.port), timeout=10)
    sock.sendall(b"GET /stream HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    received = b""
    while b"first" not in received:
        chunk = sock.recv(4096)
        assert chunk, f"the connection ended before the stream's first chunk: {received!r}"
        received += chunk
    sock.close()
    # A write into the closed connection fails (the first may still be buffered): keep ticking until then.
    wait_until(lambda: ticker.release.release() or ticker.closed.is_set(), 10, "the stream to be closed")


def test_close_returns_while_a_stream_is_still_open(ticker: Ticker) -> None:
    server = start_http_server(ANY_PORT, {"/s": lambda request: Response(stream=ticker)}, "test address")
    response = get(server, "/s")
    assert response.readline() == b"first\n"
    closer = threading.Thread(target=server.close)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive()
    with pytest.raises(OSError):
        wait_until(lambda: get(server, "/s") and None, 10, "the port to refuse connections")


def test_a_port_in_use_is_a_usage_error(server: HttpServer) -> None:
    with pytest.raises(UsageError, match=rf"^test address 127.0.0.1:{server.address.port}: "):
        start_http_server(server.address, {}, "test address")

