"""A template read from its file: the text, and the directory its includes resolve in.

Jinja stays out of the process that reads it (issue 13: the watcher reads templates, only its
render worker renders): the loader and the compiled-code cache (`lbgen.adapters.templates`) are
made where the template is first compiled, from the directory, once per directory and process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lbgen.errors import ConfigError

if TYPE_CHECKING:
    from lbgen.adapters.templates import TemplateCodeCache, TemplateDirLoader


class TemplateFile(str):
    """A template file's text (a `str`: code that stores or compares sources needs no change) and
    its directory. `loader` and `code_cache` are what the renderer reads of a source
    (`lbgen.core.render.compiled`); a pickle carries the text and the directory only."""

    directory: str

    def __new__(cls, text: str, directory: str) -> TemplateFile:
        source = super().__new__(cls, text)
        source.directory = directory
        return source

    def __reduce__(self) -> tuple[type[TemplateFile], tuple[str, str]]:
        return TemplateFile, (str(self), self.directory)

    @property
    def loader(self) -> TemplateDirLoader:
        """The loader of `directory`: an include names a file in it."""
        from lbgen.adapters.templates import loader_for

        return loader_for(self.directory)

    @property
    def code_cache(self) -> TemplateCodeCache | None:
        """This user's cache of compiled templates (None: compiled every time)."""
        from lbgen.adapters.templates import user_code_cache

        return user_code_cache()


def read_template(path: str) -> TemplateFile:
    """A template file's text and directory; a missing or unreadable file is a `ConfigError` naming it."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"template {path}: {e.strerror or e}") from e
    return TemplateFile(text, str(Path(path).resolve().parent))
