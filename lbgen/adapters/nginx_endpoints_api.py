"""A client for the control API of nginx's Lua balancer, over its unix socket (issue 12).

The API (lbgen/adapters/kinds/nginx_lua/lbgen_control.lua) is served by a `server` that listens
only on a unix socket: `GET /endpoints[?upstream=..]` reads the sets back, `PUT /endpoints` sets
some. Every failure (no socket, refused, timeout, a non-200 answer, unreadable JSON) is an
`ApplyError` naming the socket: the applier then falls back to a validated reload.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from lbgen.errors import ApplyError

_MAX_ANSWER = 64 << 20  # a read-back of 10,000 upstreams is a few MB


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EndpointsApi:
    """The control API at `path`; each call is one connection bounded by `timeout` seconds."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self._timeout = timeout

    def read(self, upstreams: Iterable[str] | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
        """(version, name → set) of the named upstreams (all when None)."""
        query = "" if upstreams is None else "?" + urlencode([("upstream", name) for name in upstreams])
        answer = self._call("GET", "/endpoints" + query, None)
        sets = answer.get("upstreams")
        if not isinstance(sets, dict) or not isinstance(answer.get("version"), str):
            raise ApplyError(f"nginx control socket {self.path}: unexpected answer {str(answer)[:100]!r}")
        return answer["version"], {name: _normal(value) for name, value in sets.items()}

    def write(self, version: str, sets: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the sets of the named upstreams, and the version."""
        self._call("PUT", "/endpoints", json.dumps({"version": version, "upstreams": sets}).encode())

    def _call(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        connection = _UnixConnection(self.path, self._timeout)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read(_MAX_ANSWER)
        except (OSError, http.client.HTTPException) as e:
            raise ApplyError(f"nginx control socket {self.path}: {method} {path[:60]}: {e}") from e
        finally:
            connection.close()
        try:
            answer = json.loads(data)
        except ValueError as e:
            raise ApplyError(f"nginx control socket {self.path}: {method}: not JSON: {data[:100]!r}") from e
        if response.status != 200 or not isinstance(answer, dict):
            raise ApplyError(f"nginx control socket {self.path}: {method} answered {response.status}: "
                             f"{str(answer.get('error') if isinstance(answer, dict) else answer)[:100]}")
        return answer


def _normal(value: Any) -> dict[str, Any]:
    """A set as read back, in the encoder's form: the Lua side writes an empty array as `{}`,
    and an endpoint's keys in any order."""
    if not isinstance(value, dict):
        return {"invalid": value}
    endpoints = value.get("endpoints") or []
    return {"balance": value.get("balance"), "endpoints": list(endpoints) if isinstance(endpoints, list) else endpoints}
