"""Config files on disk: stage beside dest, replace atomically, keep and restore a last-known-good.

Every write is a temp file in dest's directory (so the rename is atomic), fsynced, given its
mode/owner, then `os.replace`d over dest and the directory fsynced. Temp and LKG files start with a
dot so an nginx `include conf.d/*.conf` or a HAProxy `-f dir` never loads them.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable

from lbgen.core.settings import Target
from lbgen.errors import ApplyError

log = logging.getLogger(__name__)

STAGED_SUFFIX = ".lbgen"  # `.<dest name>.<random>.lbgen` beside dest

# rename(2) over a single-file bind mount fails with these (docker-gen #629, #317).
_BIND_MOUNT_ERRNOS = (errno.EBUSY, errno.EXDEV)


def real_dest(target: Target) -> Path:
    """dest with symlinks resolved: replacing a link would detach it from the file it points to."""
    return Path(os.path.realpath(target.dest))


def is_private_dir(info: os.stat_result) -> bool:
    """Whether `info` (from `os.lstat`: a link is no directory) is a directory that belongs to this
    process's user and that no other user may enter or change: the rule for a directory whose
    contents lbgen trusts (the nginx control socket's, the template code cache)."""
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def staged_pattern(dest: Path) -> re.Pattern[str]:
    """The names `_write_temp` gives files beside `dest` (`tempfile.mkstemp`: 8 of [a-z0-9_])."""
    return re.compile(re.escape(f".{dest.name}.") + r"[a-z0-9_]{8}" + re.escape(STAGED_SUFFIX))


def lkg_path(dest: Path) -> Path:
    """Where the last-known-good copy of `dest` lives (beside it, hidden)."""
    return dest.with_name(f".{dest.name}.lkg")


class LocalFiles:
    """The filesystem side of applying a target (`lbgen.ports.ConfigFiles`)."""

    def read(self, target: Target) -> str | None:
        """The current dest text, or None when dest does not exist."""
        try:
            return real_dest(target).read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ApplyError(f"{target.name}: read {target.dest}: {e}") from e

    def stage(self, target: Target, text: str) -> Path:
        """Write `text` to a hidden temp file beside dest, synced and with dest's final mode/owner."""
        dest = real_dest(target)
        try:
            return _write_temp(dest, text.encode(), *_attributes(target))
        except OSError as e:
            raise ApplyError(f"{target.name}: stage beside {dest}: {e}") from e

    def discard(self, staged: Path) -> None:
        """Remove a staged file that will not go live."""
        staged.unlink(missing_ok=True)

    def commit(self, target: Target, staged: Path) -> None:
        """Make `staged` the live dest: atomic rename, or an in-place write on a bind-mounted file."""
        dest = real_dest(target)
        try:
            _replace(staged, dest)
        except OSError as e:
            self.discard(staged)
            raise ApplyError(f"{target.name}: replace {dest}: {e}") from e

    def save_lkg(self, target: Target) -> bool:
        """Copy the live dest to its LKG file; False (and no LKG) when dest does not exist yet."""
        dest = real_dest(target)
        current = self.read(target)
        try:
            if current is None:
                lkg_path(dest).unlink(missing_ok=True)
                return False
            write_atomic(lkg_path(dest), current.encode(), *_attributes(target))
        except OSError as e:
            raise ApplyError(f"{target.name}: save last-known-good {lkg_path(dest)}: {e}") from e
        return True

    def remove_stale(self, target: Target) -> list[Path]:
        """Remove the staged files of `target` that a process killed between stage and commit left
        behind (issue 10). Only names this class creates beside dest match; call it before staging."""
        dest = real_dest(target)
        pattern = staged_pattern(dest)
        try:
            names = [n for n in os.listdir(dest.parent) if pattern.fullmatch(n)]
        except OSError:
            return []  # no directory yet: nothing was staged there
        removed = []
        for name in names:
            try:
                (dest.parent / name).unlink()
            except OSError as e:
                log.warning("%s: cannot remove stale staged file %s: %s", target.name, dest.parent / name, e)
                continue
            removed.append(dest.parent / name)
        return removed

    def restore_lkg(self, target: Target) -> None:
        """Put the LKG back as dest, atomically; with no LKG (dest was new) remove dest."""
        dest = real_dest(target)
        try:
            data = lkg_path(dest).read_bytes()
        except FileNotFoundError:
            log.warning("%s: no last-known-good: removing %s, which did not exist before", target.name, dest)
            dest.unlink(missing_ok=True)
            return
        try:
            _replace(_write_temp(dest, data, *_attributes(target)), dest)
        except OSError as e:
            raise ApplyError(f"{target.name}: restore last-known-good over {dest}: {e}") from e


def write_atomic(path: Path, data: bytes, mode: int | None = None, owner: str | None = None,
                 group: str | None = None) -> None:
    """Make `data` the content of `path`: temp `.<name>.<random>.tmp` in its directory, fsync, rename,
    directory fsync (a bind-mounted file is written in place). Needs no settings `Target` (issue 11):
    the LKG, the applied state and the file registry all write through it. Mode None keeps mkstemp's
    0600. Not `.lbgen`: that suffix names staged candidates of a dest only. Raises OSError."""
    _replace(_write_temp(path, data, mode, owner, group, suffix=".tmp"), path)


def _attributes(target: Target) -> tuple[int, str | None, str | None]:
    return target.mode, target.owner, target.group


def name_candidates(text: str, dest: str) -> str:
    """`text` (a checker's output) with the staged files of `dest`, removed once checked, named as
    what they were: `/etc/nginx/nginx.conf (candidate)` instead of `/etc/nginx/.nginx.conf.x1y2.lbgen`."""
    path = Path(dest)
    staged = re.compile(re.escape(str(path.parent / f".{path.name}.")) + r"[A-Za-z0-9_]+" + re.escape(STAGED_SUFFIX))
    return staged.sub(lambda _: f"{dest} (candidate)", text)


def _write_temp(dest: Path, data: bytes, mode: int | None, owner: str | None, group: str | None,
                suffix: str = STAGED_SUFFIX) -> Path:
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            if owner or group:
                os.fchown(f.fileno(), _uid(owner), _gid(group))
            os.fsync(f.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _replace(temp: Path, dest: Path) -> None:
    try:
        os.replace(temp, dest)
    except OSError as e:
        if e.errno not in _BIND_MOUNT_ERRNOS:
            temp.unlink(missing_ok=True)
            raise
        log.warning("rename over %s failed (%s): bind-mounted file? writing in place, not atomically", dest, e)
        _write_in_place(temp, dest)
        return
    _fsync_dir(dest.parent)


def _write_in_place(temp: Path, dest: Path) -> None:
    try:
        with open(dest, "r+b") as f:
            f.write(temp.read_bytes())
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
    finally:
        temp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _uid(owner: str | None) -> int:
    return _account_id(owner, lambda name: pwd.getpwnam(name).pw_uid, "user")


def _gid(group: str | None) -> int:
    return _account_id(group, lambda name: grp.getgrnam(name).gr_gid, "group")


def _account_id(name: str | None, lookup: Callable[[str], int], what: str) -> int:
    """A numeric id for a user/group name or number; -1 (leave unchanged) for None."""
    if name is None:
        return -1
    if name.isdigit():
        return int(name)
    try:
        return lookup(name)
    except KeyError as e:
        raise ApplyError(f"no such {what} {name!r}") from e
