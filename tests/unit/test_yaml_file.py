"""YAML errors name the file and the line."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.adapters.file_store import FileStore
from lbgen.adapters.yaml_file import SETTINGS_LIMITS, _BoundedLoader, _plain_data, _Unusual, load_yaml, parse_yaml
from lbgen.cli.deploy import load_spec
from lbgen.cli.lb_node import load_settings
from lbgen.core.settings import parse_settings
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


# --- bounds, duplicate keys, modes (issue 10 part 2, issue 14 part 4) ------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefg", "bcdefgh"))


@pytest.mark.parametrize("text, error", [
    ("services:\n  web: {}\nx: 1\nservices:\n  api: {}\n", r"^f.yaml:4:1: duplicate key 'services' \(first on line 1\)$"),
    ("a:\n  b: 1\n  b: 2\n", r"^f.yaml:3:3: duplicate key 'b' \(first on line 2\)$"),
    ("{a: 1, a: 2}", r"^f.yaml:1:8: duplicate key 'a'"),
    ("[" * 1000 + "]" * 1000, r"^f.yaml:1:65: nested deeper than 64 levels$"),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), r"nested deeper than 64 levels$"),
    (BOMB, r"more than 200000 nodes \(aliases expanded\)$"),
    ("a: &x [1, *x]\n", r"^f.yaml:1:11: alias \*x refers to its own parent$"),
    ("x" * (1024 * 1024 + 1), r"^f.yaml: 1048577 characters, the limit is 1048576$"),
    ("a: 2001-13-45\n", r"^f.yaml: month must be in 1..12$"),
], ids=["registry-services-twice", "nested-duplicate", "flow-duplicate", "deep-flow", "deep-block",
        "alias-bomb", "recursive-alias", "too-big", "not-a-date"])
def test_bad_yaml_is_one_line_naming_the_place(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_yaml(text, "f.yaml")


def test_merge_keys_and_modest_aliases_still_work() -> None:
    text = "base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\nl: [*b, *b]\n"
    assert parse_yaml(text, "f.yaml") == {"base": {"x": 1, "y": 2}, "m": {"x": 3, "y": 2}, "l": [{"x": 1, "y": 2}] * 2}


def test_integers_remember_how_they_were_written_and_dump_back() -> None:
    data = parse_yaml("a: 644\nb: 0644\nc: 0x1a4\n", "f.yaml")
    assert [(v, v.text) for v in data.values()] == [(644, "644"), (0o644, "0644"), (0x1A4, "0x1a4")]
    assert yaml.safe_load(yaml.safe_dump(data)) == {"a": 644, "b": 420, "c": 420}


@pytest.mark.parametrize("written, mode", [("644", 0o644), ("0644", 0o644), ('"0644"', 0o644), ("'644'", 0o644),
                                           ("0o640", 0o640), ("1777", 0o1777), ("600", 0o600), ("420", 0o420)])
def test_mode_digits_are_octal_as_chmod_reads_them(tmp_path: Path, written: str, mode: int) -> None:
    path = tmp_path / "lbgen.yaml"
    path.write_text(f"registry: file:r.yaml\ntargets:\n  - {{name: t, template: t.j2, dest: o, check: [test, -f, '{{staged}}'], mode: {written}}}\n")
    assert parse_settings(load_yaml(path), str(tmp_path)).targets[0].mode == mode


@pytest.mark.parametrize("written", ["0x1a4", "888", "rw-r--r--", "64", "17777"])
def test_a_mode_that_is_not_octal_digits_is_an_error(tmp_path: Path, written: str) -> None:
    path = tmp_path / "lbgen.yaml"
    path.write_text(f"registry: file:r.yaml\ntargets:\n  - {{name: t, template: t.j2, dest: o, check: [test, -f, '{{staged}}'], mode: {written}}}\n")
    with pytest.raises(ConfigError, match=r"targets\[0\].mode: "):
        parse_settings(load_yaml(path), str(tmp_path))


def test_a_duplicate_key_in_the_registry_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("services:\n  web:\n    spec: {listen: 80}\nservices:\n  api:\n    spec: {listen: 81}\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4:1: duplicate key 'services' \(first on line 1\)$"):
        FileStore(path)


def test_load_yaml_refuses_a_huge_file_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    with pytest.raises(ConfigError, match=r"big.yaml: larger than 1048576 bytes$"):
        load_yaml(path)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="ab:-[]{}&*<>,!? \n\t'\"#|0123456789", max_size=200))
def test_any_text_gives_a_value_or_a_config_error(text: str) -> None:
    try:
        parse_yaml(text, "f.yaml")
    except ConfigError as e:
        assert str(e).startswith("f.yaml") and "\n" not in str(e).strip()


def test_settings_and_deploy_specs_name_the_duplicate_key(tmp_path: Path) -> None:
    settings = tmp_path / "lbgen.yaml"
    settings.write_text("registry: file:r.yaml\ntargets: []\nregistry: etcd://127.0.0.1:2379\n")
    with pytest.raises(ConfigError, match=rf"^{settings}:3:1: duplicate key 'registry' \(first on line 1\)$"):
        load_settings(str(settings))
    spec = tmp_path / "deploy.yaml"
    spec.write_text("project: p\nservices:\n  web:\n    image: a\n    replicas: 1\n    image: b\n")
    with pytest.raises(ConfigError, match=rf"^{spec}:6:5: duplicate key 'image' \(first on line 4\)$"):
        load_spec(str(spec))


# --- the fast path (issue 13): a plain document is built from the parser's events ---------------

def full_loader(text: str) -> object:
    """What the full loader (node tree, then the constructor) makes of `text`, or its error line."""
    loader = _BoundedLoader(text, SETTINGS_LIMITS)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        return f"error: {e}"
    finally:
        loader.dispose()


def fast_path(text: str) -> object:
    """The fast path's document, or "unusual" when it leaves `text` to the full loader."""
    loader = _BoundedLoader(text, SETTINGS_LIMITS)
    try:
        return _plain_data(loader)
    except (_Unusual, yaml.YAMLError):
        return "unusual"
    finally:
        loader.dispose()


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=8), st.dates(), st.sampled_from(["0644", "0x1a", "yes", "~", "1e3", "<<x"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 99)), inner,
                                                  max_size=4)), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(data=documents, flow=st.sampled_from([None, True, False]))
def test_a_plain_document_takes_the_fast_path_and_reads_as_the_full_loader_reads_it(data: object,
                                                                                       flow: bool | None) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=False)
    fast = fast_path(text)
    assert fast != "unusual", text
    assert fast == full_loader(text) == yaml.safe_load(text)
    assert [type(v) for v in _leaves(fast)] == [type(v) for v in _leaves(full_loader(text))]


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in (k, *_leaves(v))]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab:-[]{}&*<>,!? \n\t'\"#|0123456789", max_size=200))
def test_whatever_the_fast_path_accepts_reads_as_the_full_loader_reads_it(text: str) -> None:
    fast = fast_path(text)
    if fast != "unusual":
        assert fast == full_loader(text)


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n", "<<: {a: 1}\n", "? [1]\n: 2\n", "a: 1\na: 2\n", "!!str 1\n", "a: 1\n---\nb: 2\n",
    "[" * 70 + "]" * 70, "a: !!binary aGk=\n",
], ids=["alias", "merge", "complex-key", "duplicate", "tag", "two-documents", "deep", "binary"])
def test_the_fast_path_leaves_anything_unusual_to_the_full_loader(text: str) -> None:
    assert fast_path(text) == "unusual"
