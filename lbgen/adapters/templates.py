"""Template files: their text, and a sandboxed loader for `{% include %}` rooted at their directory.

An include names a file relative to the including template's directory: no absolute path, no
`..`, and no symlink that leads out of the directory, so a template cannot read `/etc/shadow` or
a TLS key into a config. Loaders are cached per directory: the core's compiled-template cache is
keyed on the loader, so one loader per directory keeps it warm.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import jinja2

from lbgen.core.render import TemplateSource
from lbgen.errors import ConfigError


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


def read_template(path: str) -> TemplateSource:
    """A template file's text with the loader of its directory; a missing or unreadable file is a
    `ConfigError` naming it."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"template {path}: {e.strerror or e}") from e
    return TemplateSource(text, loader_for(str(Path(path).resolve().parent)))
