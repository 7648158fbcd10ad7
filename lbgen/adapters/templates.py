"""A template file's sandboxed loader for `{% include %}`, rooted at its directory, and the cache of
compiled templates (`lbgen.adapters.template_file.TemplateFile` makes them where it is compiled).

An include names a file relative to the including template's directory: no absolute path, no
`..`, and no symlink that leads out of the directory, so a template cannot read `/etc/shadow` or
a TLS key into a config. Loaders are cached per directory: the core's compiled-template cache is
keyed on the loader, so one loader per directory keeps it warm.

Compiled templates are also kept between processes (issue 13: compiling nginx.conf.j2 was ~18 ms
of a one-shot `lbgen render`), in `$XDG_CACHE_HOME/lbgen` (default `~/.cache/lbgen`). A cache file
is code that runs, so the directory is used only while it is this user's own, mode 0700 (made so
when lbgen creates it), in a parent no one else may rename it out of; otherwise templates are
compiled every time. A cache file that does not read back is compiled again, one that cannot be
written is not kept: the cache never fails a render.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import stat
from pathlib import Path
from typing import Callable

import jinja2
from jinja2.bccache import Bucket

from lbgen.adapters.files import is_private_dir

log = logging.getLogger(__name__)

CACHE_HOME_ENV = "XDG_CACHE_HOME"
# What a damaged cache file may raise while read (its header is a pickle, its body marshal data).
_UNREADABLE = (OSError, EOFError, ValueError, TypeError, LookupError, AttributeError, ImportError,
               pickle.UnpicklingError)


class TemplateDirLoader(jinja2.FileSystemLoader):
    """A `FileSystemLoader` confined to one directory (symlinks out of it refused too)."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory, followlinks=False)
        self.root = Path(directory).resolve()

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        parts = template.replace("\\", "/").split("/")
        if template.startswith(("/", "\\")) or ".." in parts:
            raise jinja2.TemplateNotFound(f"{template[:100]}: includes are relative to {self.root}, "
                                          "without '..' or a leading '/'")
        source, filename, uptodate = super().get_source(environment, template)
        if not Path(filename).resolve().is_relative_to(self.root):
            raise jinja2.TemplateNotFound(f"{template[:100]}: leads out of {self.root}")
        return source, filename, uptodate


@functools.lru_cache(maxsize=64)
def loader_for(directory: str) -> TemplateDirLoader:
    """The one loader of `directory`."""
    return TemplateDirLoader(directory)


class TemplateCodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's file cache of compiled templates (written to a temp file, then renamed), failing
    soft: a file that does not read back is a miss, a write that fails keeps nothing."""

    def __init__(self, directory: Path) -> None:
        super().__init__(str(directory), "template-%s.jinja")

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except _UNREADABLE as e:
            log.debug("template code cache: %s unreadable, compiling: %s", self._get_cache_filename(bucket), e)
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError as e:
            log.debug("template code cache: not kept in %s: %s", self.directory, e)


@functools.cache
def user_code_cache() -> TemplateCodeCache | None:
    """This user's template code cache (once per process), or None when it has no private directory."""
    home = os.environ.get(CACHE_HOME_ENV, "")
    if not os.path.isabs(home):  # unset or relative: the XDG default
        home = os.path.join(os.path.expanduser("~"), ".cache")
    directory = private_dir(Path(home) / "lbgen")
    return TemplateCodeCache(directory) if directory else None


def private_dir(path: Path) -> Path | None:
    """`path` (made mode 0700 if missing) when it is a directory, not a link, owned by this user and
    closed to others, in a parent that only its owner (this user or root) may change, or
    that is sticky (/tmp); else None, logged."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        mine, parent = os.lstat(path), os.stat(path.parent)
    except OSError as e:
        log.debug("template code cache: no %s: %s", path, e)
        return None
    uid = os.geteuid()
    private = is_private_dir(mine)
    guarded = parent.st_uid in (uid, 0) and (not parent.st_mode & 0o022 or parent.st_mode & stat.S_ISVTX)
    if private and guarded:
        return path
    log.debug("template code cache: not used, %s is not a private directory of user %s", path, uid)
    return None
