"""The private directory of the Lua balancer's control socket (issue 12).

Whoever can connect to the control API can point every upstream at an address of their choice.
nginx gives every unix socket it listens on mode 0666, so the socket cannot protect itself: its
directory does. lbgen creates that directory, mode 0700, before nginx checks a config that listens
there (`nginx -t` needs it to exist), and talks to the socket only while the directory is private
to lbgen's user: otherwise the change goes live through the validated reload instead, and the
reason (what to fix) is logged and counted as a runtime fallback.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lbgen.adapters.files import is_private_dir
from lbgen.core.kinds.nginx import control_socket
from lbgen.core.settings import Target
from lbgen.errors import ApplyError


def socket_directory(target: Target) -> Path:
    """The directory of the target's control socket."""
    return Path(control_socket(target.vars)).parent


def make_directory(target: Target) -> None:
    """Create the control socket's directory, mode 0700, unless something is there already (what
    is there is judged by `check_private` before each use of the socket)."""
    directory = socket_directory(target)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ApplyError(f"{target.name}: cannot create the control socket directory {directory}: "
                         f"{e.strerror or e}") from e


def check_private(target: Target) -> None:
    """`ApplyError` unless the control socket's directory is a real directory (not a link) that
    belongs to this process's user and that no other user may enter."""
    directory = socket_directory(target)
    try:
        info = os.lstat(directory)
    except OSError as e:
        raise ApplyError(f"{target.name}: control socket directory {directory}: {e.strerror or e}") from e
    if is_private_dir(info):
        return
    if not stat.S_ISDIR(info.st_mode):
        raise ApplyError(f"{target.name}: control socket directory {directory} is not a directory")
    raise ApplyError(
        f"{target.name}: control socket directory {directory} is open to other users (owner uid "
        f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}): it must belong to lbgen's user "
        "with mode 0700 (remove it and lbgen recreates it)")
