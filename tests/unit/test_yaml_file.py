"""YAML errors name the file and the line."""

from pathlib import Path

import pytest

from lbgen.adapters.yaml_file import load_yaml, parse_yaml
from lbgen.errors import ConfigError


def test_syntax_error_names_source_and_line() -> None:
    with pytest.raises(ConfigError, match=r"^spec.yaml:3:\d+: "):
        parse_yaml("a: 1\nb: [2\nc: }", "spec.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: No such file"):
        load_yaml(tmp_path / "nope.yaml")


def test_reads_a_document(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("targets: []\n")
    assert load_yaml(tmp_path / "x.yaml") == {"targets": []}
