"""The dynamic modules a config loads must exist: one clear line naming the Debian package.

Without it `nginx -t` says `dlopen() ".../ngx_http_lua_module.so" failed ...` at best; a target
with `runtime: true` on a node without the Lua module (issue 12) should say what to install.
"""

from __future__ import annotations

import re
from pathlib import Path

from lbgen.errors import ApplyError

# Debian 12's packages for the modules lbgen's template loads.
PACKAGES = {
    "ngx_http_lua_module.so": "libnginx-mod-http-lua",
    "ndk_http_module.so": "libnginx-mod-http-ndk",
    "ngx_stream_module.so": "libnginx-mod-stream",
}
_HEAD = 64 << 10  # load_module is only allowed in the main context, before any block: the head
_LOAD_RE = re.compile(r'^[ \t]*load_module[ \t]+"?([^";\s]+)"?[ \t]*;', re.M)
_PREFIX = "/usr/share/nginx"  # Debian's nginx prefix: relative module paths resolve against it


def require_modules(target: str, config: Path) -> None:
    """`ApplyError` naming the first module `config` loads that is not installed (and its package)."""
    try:
        with config.open("rb") as f:
            head = f.read(_HEAD).decode("utf-8", "replace")
    except OSError:
        return  # the checker reports an unreadable config in its own words
    for match in _LOAD_RE.finditer(head):
        module = Path(match[1]) if match[1].startswith("/") else Path(_PREFIX) / match[1]
        if not module.exists():
            package = PACKAGES.get(module.name)
            install = f": apt-get install {package}" if package else ""
            raise ApplyError(f"{target}: nginx module {module} is not installed{install}")
