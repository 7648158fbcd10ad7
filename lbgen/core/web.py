"""HTTP as values: requests, responses, a route table and the checks every route shares.

lbgen's one small HTTP server (`lbgen.adapters.http_server`) turns each request into a `Request`,
hands it to `dispatch`, and writes back the `Response`; metrics, `/healthz` and the dashboard are
just entries of a route table (issue 11: one HTTP server, not one per feature). Everything here is
pure, so routing, token checks and server-sent-event framing are tested without a socket.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any, Callable, Iterable, Mapping

import msgspec

from lbgen.errors import UsageError

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


class ListenAddress(msgspec.Struct, frozen=True):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


def parse_listen_address(text: str, what: str = "metrics address") -> ListenAddress | None:
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
        raise UsageError(f"{what} {text[:100]!r}: expected IP:PORT (e.g. 127.0.0.1:9101) or off")
    return ListenAddress(host, int(port))


class Request(msgspec.Struct, frozen=True):
    """What a route sees of a request: header names are lower-case, each query name keeps its first value."""

    method: str
    path: str
    query: Mapping[str, str] = {}
    headers: Mapping[str, str] = {}


class Response(msgspec.Struct, frozen=True):
    """A whole body, or a `stream` of chunks the server writes and flushes one by one (server-sent
    events); the server closes the stream's iterator when the client goes away."""

    status: int = 200
    body: bytes = b""
    content_type: str = TEXT
    headers: Mapping[str, str] = {}
    stream: Iterable[bytes] | None = None


Route = Callable[[Request], Response]


def text(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A one-line plain-text answer."""
    return Response(status, message.encode() + b"\n", TEXT, headers or {})


def json_response(value: Any, status: int = 200) -> Response:
    """`value` as a JSON body that no cache keeps."""
    body = json.dumps(value, indent=2).encode() + b"\n"
    return Response(status, body, JSON, {"Cache-Control": "no-store"})


def dispatch(routes: Mapping[str, Route], request: Request) -> Response:
    """The route for `request.path` answers; an unknown path is 404. Only GET and HEAD exist: every
    server of lbgen is read-only."""
    if request.method not in ("GET", "HEAD"):
        return text(405, f"{request.method}: not allowed (read-only)", {"Allow": "GET, HEAD"})
    route = routes.get(request.path)
    if route is None:
        return text(404, f"{request.path[:100]}: not found")
    return route(request)


def bearer_token(request: Request) -> str | None:
    """The token a request presents: `Authorization: Bearer T`, else `?token=T` (a browser's
    EventSource cannot set headers)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token")


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak how much of a guess was right."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def require_token(route: Route, token: str) -> Route:
    """`route`, answering 401 to a request without the right token."""

    def guarded(request: Request) -> Response:
        if token_matches(bearer_token(request), token):
            return route(request)
        return text(401, "a valid token is required (Authorization: Bearer, or ?token=)",
                    {"WWW-Authenticate": 'Bearer realm="lbgen"'})

    return guarded


def is_local_host(host_header: str) -> bool:
    """Whether a `Host` header names this machine by an IP literal or `localhost`.

    A page on another site can make a browser resolve its own name to 127.0.0.1 (DNS rebinding)
    and read a loopback server's answers: such a request carries that foreign name in `Host`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def require_local_host(route: Route) -> Route:
    """`route`, answering 421 to a request whose `Host` is not an IP literal or `localhost`."""

    def guarded(request: Request) -> Response:
        if is_local_host(request.headers.get("host", "")):
            return route(request)
        return text(421, "Host must be an IP address or localhost (or start the dashboard with a token)")

    return guarded


def sse_event(event: str, data: str) -> bytes:
    """One server-sent event (`text/event-stream`): a name and its data, one `data:` line per line."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


SSE_HEARTBEAT = b": heartbeat\n\n"
