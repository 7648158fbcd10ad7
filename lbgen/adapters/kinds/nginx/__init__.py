"""nginx's adapters: the master's control (`control`), the Lua balancer's control API (`runtime`),
the Lua code itself (`lua/`, package data), and the render context that points the template at
it (`LuaDir`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lbgen.adapters.kinds import KindAdapter
from lbgen.adapters.kinds.nginx.control import NginxControl, shadow_main_config
from lbgen.adapters.kinds.nginx.runtime import NginxRuntime
from lbgen.core.model import Catalog
from lbgen.core.settings import Target

LUA_DIR = Path(__file__).resolve().parent / "lua"


class LuaDir:
    """`lbgen.adapters.kinds.LiveContext`: `lua_dir`, where this installation keeps the balancer's
    Lua (the template's default for `vars.lua_dir`)."""

    def context(self, target: Target, catalog: Catalog) -> Mapping[str, Any]:
        return {"lua_dir": str(LUA_DIR)}

    def rendered(self, target: Target, text: str) -> None:
        """Nothing to remember: the directory does not depend on what was rendered."""


ADAPTER = KindAdapter(control=NginxControl, runtime=NginxRuntime, live_context=LuaDir)

__all__ = ["ADAPTER", "LUA_DIR", "LuaDir", "NginxControl", "NginxRuntime", "shadow_main_config"]
