"""nginx's runtime API: the control API of the Lua balancer, over its unix socket (issue 12).

The API (lua/lbgen_control.lua beside this module) is served by a `server` that listens only on
a unix socket (`control_socket(vars)`): `GET /endpoints[?upstream=..]` reads the sets back,
`PUT /endpoints` sets some. `NginxRuntime.apply` sends an `EndpointPlan`, reads the touched
upstreams back and compares. Every failure (no socket, refused, timeout, a non-200 answer,
unreadable JSON, a read-back that differs) is an `ApplyError` naming the socket: the applier then
falls back to a reload of the file it already wrote.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from lbgen.adapters.kinds.nginx.socket_dir import check_private
from lbgen.core.kinds import RuntimeChange
from lbgen.core.kinds.nginx import control_socket
from lbgen.core.kinds.nginx.endpoints import EndpointPlan
from lbgen.core.settings import Target
from lbgen.errors import ApplyError
from lbgen.ports import Clock

log = logging.getLogger(__name__)

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


class Api(Protocol):
    """What `NginxRuntime` needs of the control API (tests inject one that lies)."""

    def read(self, upstreams: Iterable[str] | None = None) -> tuple[str, dict[str, dict[str, Any]]]: ...

    def write(self, version: str, sets: Mapping[str, Mapping[str, Any]]) -> None: ...


class NginxRuntime:
    """`lbgen.ports.RuntimeApi` of one nginx with the Lua balancer."""

    def __init__(self, target: Target, clock: Clock, api: Api | None = None) -> None:
        self._target = target
        self.socket = Path(control_socket(target.vars))
        self._api = api or EndpointsApi(self.socket, target.timeout)

    def apply(self, plan: RuntimeChange) -> None:
        """Set the plan's upstreams and version, read them back, compare; `ApplyError` otherwise."""
        if not isinstance(plan, EndpointPlan):
            raise ApplyError(f"{self._target.name}: not an nginx endpoint plan: {type(plan).__name__}")
        if not self.socket.exists():  # no nginx with the Lua balancer running: reload at once
            raise ApplyError(f"{self._target.name}: no nginx control socket at {self.socket}")
        check_private(self._target)  # a socket another user could have put there is not nginx's
        self._api.write(plan.version, plan.upstreams)
        version, sets = self._api.read(plan.upstreams)
        if version != plan.version:
            raise ApplyError(f"{self._target.name}: nginx reads back version {version[:64]!r}, "
                             f"not {plan.version!r}")
        for name, expected in plan.upstreams.items():
            if sets.get(name) != _normal(expected):
                raise ApplyError(f"{self._target.name}: nginx reads back upstream {name} as "
                                 f"{str(sets.get(name))[:100]}, not as written")
        log.debug("%s: %d upstream(s) set and read back", self._target.name, len(plan.upstreams))


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
