"""The compiled-template cache (issue 13): used only in a private directory, keyed by everything that
shapes the code, and never the reason a render fails."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from lbgen.adapters import templates
from lbgen.adapters.template_file import read_template
from lbgen.adapters.templates import TemplateCodeCache, private_dir, user_code_cache
from lbgen.core.model import Catalog, Service
from lbgen.core.render import TemplateSource, compile_template, render
from lbgen.core.settings import Target
from lbgen.errors import TemplateError

CATALOG = Catalog(7, (Service("web", {"listen": 8080}),))


def target(kind: str = "generic", template: str = "t.j2") -> Target:
    return Target(name="t", template=template, dest="/tmp/t", kind=kind)


def render_with(cache: TemplateCodeCache, text: str, kind: str = "generic") -> str:
    """A render as a fresh process makes it: nothing compiled in memory yet."""
    compile_template.cache_clear()
    return render(TemplateSource(text, None, cache), CATALOG, target(kind))


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("template-*.jinja"))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    return directory


def test_a_second_process_runs_the_code_kept_by_the_first(cache_dir: Path) -> None:
    """Proof that the cached code is what runs: a file planted under the key and checksum of one
    source, holding another's code, renders the other (why the directory must be private)."""
    cache = TemplateCodeCache(cache_dir)
    source = "{% for s in services %}{{ s.name }}\n{% endfor %}"
    assert render_with(cache, source) == "web\n"
    [kept] = cache_files(cache_dir)
    planted_dir = cache_dir.parent / "planted"
    planted_dir.mkdir(mode=0o700)
    other = TemplateCodeCache(planted_dir)
    render_with(other, "planted {{ revision }}\n")
    [planted] = cache_files(planted_dir)
    kept.write_bytes(planted.read_bytes().replace(*_checksums("planted {{ revision }}\n", source)))
    assert render_with(cache, source) == "planted 7\n"


def _checksums(old: str, new: str) -> tuple[bytes, bytes]:
    """The checksums Jinja keeps of two sources (SHA-1, hex), as they appear in a cache file."""
    return hashlib.sha1(old.encode()).hexdigest().encode(), hashlib.sha1(new.encode()).hexdigest().encode()


def test_an_edited_template_is_compiled_again(cache_dir: Path) -> None:
    cache = TemplateCodeCache(cache_dir)
    assert render_with(cache, "one {{ revision }}\n") == "one 7\n"
    assert render_with(cache, "two {{ revision }}\n") == "two 7\n"
    assert render_with(cache, "one {{ revision }}\n") == "one 7\n"


def test_a_guarded_kind_and_an_unguarded_one_keep_apart_code(cache_dir: Path) -> None:
    """The same template name and text compile differently for nginx (every output checked) and for
    generic: each has its own file, and nginx still refuses an unquoted value read from the cache."""
    cache = TemplateCodeCache(cache_dir)
    source = "{{ vars.get('x', 'a b') }}\n"
    assert render_with(cache, source) == "a b\n"
    with pytest.raises(TemplateError, match="unquoted output"):
        render_with(cache, source, kind="nginx")
    with pytest.raises(TemplateError, match="unquoted output"):
        render_with(cache, source, kind="nginx")
    assert len(cache_files(cache_dir)) == 2


@pytest.mark.parametrize("damage", [b"", b"j2", b"garbage" * 10, None], ids=["empty", "cut", "garbage", "cut-body"])
def test_a_damaged_cache_file_is_compiled_again_and_rewritten(cache_dir: Path, damage: bytes | None) -> None:
    cache = TemplateCodeCache(cache_dir)
    source = "x {{ revision }}\n"
    render_with(cache, source)
    [kept] = cache_files(cache_dir)
    whole = kept.read_bytes()
    kept.write_bytes(whole[: len(whole) - 40] if damage is None else damage)
    assert render_with(cache, source) == "x 7\n"
    assert kept.read_bytes() == whole


def test_a_cache_that_cannot_be_written_keeps_nothing_and_renders(tmp_path: Path) -> None:
    cache = TemplateCodeCache(tmp_path / "gone")
    assert render_with(cache, "y {{ revision }}\n") == "y 7\n"
    assert not (tmp_path / "gone").exists()


def test_a_missing_directory_is_made_private(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "home" / ".cache" / "lbgen")
    assert made == tmp_path / "home" / ".cache" / "lbgen"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o777], ids=["group", "other", "everyone"])
def test_a_directory_open_to_others_is_not_used(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "lbgen"
    directory.mkdir()
    directory.chmod(mode)
    assert private_dir(directory) is None


def test_a_link_is_not_used(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "lbgen").symlink_to(real)
    assert private_dir(tmp_path / "lbgen") is None


@pytest.mark.parametrize("mode, used", [(0o777, False), (0o1777, True), (0o755, True)],
                         ids=["others-may-rename-it", "sticky", "closed"])
def test_the_parent_must_keep_others_from_replacing_it(tmp_path: Path, mode: int, used: bool) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(mode)
    assert (private_dir(parent / "lbgen") is not None) == used


def test_a_directory_of_another_user_is_not_used(tmp_path: Path) -> None:
    directory = tmp_path / "lbgen"
    directory.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")  # CI runs as root
    os.chown(directory, 65534, 65534)
    assert private_dir(directory) is None


def test_the_user_cache_follows_xdg_and_a_relative_value_is_ignored(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    user_code_cache.cache_clear()
    try:
        cache = user_code_cache()
        assert cache is not None and cache.directory == str(tmp_path / "xdg" / "lbgen")
        monkeypatch.setenv("XDG_CACHE_HOME", "relative")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        user_code_cache.cache_clear()
        cache = user_code_cache()
        assert cache is not None and cache.directory == str(tmp_path / "home" / ".cache" / "lbgen")
    finally:
        user_code_cache.cache_clear()


def test_a_template_read_from_a_file_carries_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    user_code_cache.cache_clear()
    try:
        path = tmp_path / "t.j2"
        path.write_text("{{ revision }}\n")
        source = read_template(str(path))
        assert source.code_cache is templates.user_code_cache()
        compile_template.cache_clear()
        assert render(source, CATALOG, target(template=str(path))) == "7\n"
        assert len(cache_files(tmp_path / "xdg" / "lbgen")) == 1
    finally:
        user_code_cache.cache_clear()
