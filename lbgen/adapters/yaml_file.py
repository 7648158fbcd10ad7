"""Reading YAML documents (settings, deploy specs, the file registry) with errors that point at a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lbgen.errors import ConfigError


def parse_yaml(text: str, source: str) -> Any:
    """Parse `text`; a syntax error becomes `ConfigError("source:line:column: problem")`."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: {e.problem or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {e}") from e


def load_yaml(path: str | Path) -> Any:
    """Read and parse the YAML file at `path`; unreadable or invalid → `ConfigError` naming it."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from e
    return parse_yaml(text, str(path))
