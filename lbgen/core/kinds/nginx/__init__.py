"""nginx's pure rules: its built-in check, its quoting filters (`nginx`, `lua`), guarded outputs,
and, with `runtime` on, the endpoint block of the Lua balancer and its runtime plan (`endpoints`,
issue 12, docs/nginx-runtime.md)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lbgen.core.kinds import LbKind
from lbgen.core.kinds.nginx.endpoints import EndpointBlock, endpoint_block, plan_endpoints, warm
from lbgen.core.layout import UnsafeValue, Verbatim
from lbgen.core.quoting import BARE_RE, scalar_text

DEFAULT_PID_FILE = "/run/nginx.pid"  # Debian's, and the default template's
# In a directory of its own, which lbgen keeps private (mode 0700): nginx makes every unix socket
# it listens on mode 0666, so the directory is what keeps other local users off the control API.
CONTROL_SOCKET_DIR = "lbgen-nginx"
CONTROL_SOCKET_NAME = "control.sock"
_LUA_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]+")


def nginx_quote(value: Any) -> Verbatim:
    """An nginx directive argument: bare when safe, else double-quoted with `\\` escapes.

    `$` is refused: nginx expands variables even inside quotes and has no escape for it.
    """
    text = scalar_text(value, "nginx")
    if BARE_RE.fullmatch(text):
        return Verbatim(text)
    if "$" in text:
        raise UnsafeValue(f"nginx: refusing {text!r}: '$' would be expanded as a variable")
    return Verbatim('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')


def lua_quote(value: Any) -> Verbatim:
    """A Lua string literal inside a `*_by_lua_block` for a name (an upstream's): only characters
    that neither Lua nor nginx's Lua block parser treat specially."""
    text = scalar_text(value, "lua")
    if not _LUA_NAME_RE.fullmatch(text):
        raise UnsafeValue(f"lua: refusing {text!r}: only [A-Za-z0-9_.:-] go into a Lua string here")
    return Verbatim(f'"{text}"')


def control_socket(variables: Mapping[str, Any]) -> str:
    """The unix socket of the Lua balancer's control API: `vars.control_socket`, else
    `lbgen-nginx/control.sock` beside the pid file (the template and the runtime adapter both ask
    here). Its directory must be private to lbgen's user: `lbgen.adapters.kinds.nginx` makes it so."""
    chosen = variables.get("control_socket")
    if chosen:
        return str(chosen)
    pid = str(variables.get("pid", DEFAULT_PID_FILE))
    return posixpath.join(posixpath.dirname(pid) or ".", CONTROL_SOCKET_DIR, CONTROL_SOCKET_NAME)


def _lua_endpoints(services: Any) -> EndpointBlock:
    """`lua_endpoints(services)` for templates: the endpoint block of the Lua-balanced upstreams."""
    return endpoint_block(services)


def _runtime_default(variables: Mapping[str, Any]) -> bool:
    """Off unless asked for: the Lua balancer needs modules nginx-light lacks (issue 12)."""
    return False


KIND = LbKind(
    name="nginx",
    check=("nginx", "-t", "-q", "-c", "{staged}"),
    guarded=True,
    filters=MappingProxyType({"nginx": nginx_quote, "lua": lua_quote}),
    template_globals=MappingProxyType({"lua_endpoints": _lua_endpoints, "control_socket": control_socket}),
    value_types=(EndpointBlock,),
    runtime_default=_runtime_default,
    plan_runtime=plan_endpoints,
    warm=warm,
)
