"""`{% include %}` on real files: rooted at the template's own directory, no way out of it, and
`lbgen render` run for real with a template split over two files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lbgen.adapters.template_file import read_template
from lbgen.core.model import Catalog
from lbgen.core.settings import Target
from lbgen.core.render import render
from lbgen.errors import TemplateError
from tests.support.lbgen_proc import ENV

pytestmark = pytest.mark.integration


def _render(template: Path) -> str:
    target = Target(name="t", template=str(template), dest="/dev/null", kind="generic")
    return render(read_template(str(template)), Catalog(1, ()), target)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/secret.txt beside tmp/lb/ holding the templates; lb/parts/ a sub-directory."""
    (tmp_path / "secret.txt").write_text("SECRET\n")
    lb = tmp_path / "lb"
    (lb / "parts").mkdir(parents=True)
    (lb / "head.j2").write_text("head\n")
    (lb / "parts" / "tail.j2").write_text("tail\n")
    os.symlink(tmp_path / "secret.txt", lb / "link.j2")
    return lb


def test_siblings_and_sub_directories_are_included(tree: Path) -> None:
    (tree / "main.j2").write_text("{% include 'head.j2' %}{% include 'parts/tail.j2' %}")
    assert _render(tree / "main.j2") == "head\ntail\n"


@pytest.mark.parametrize(("name", "why"), [
    ("../secret.txt", "without '..' or a leading '/'"),
    ("parts/../../secret.txt", "without '..'"),
    ("/etc/passwd", "without '..' or a leading '/'"),
    ("link.j2", "leads out of"),
    ("nope.j2", "nope.j2"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "missing"])
def test_nothing_outside_the_template_directory_is_included(tree: Path, name: str, why: str) -> None:
    (tree / "main.j2").write_text(f"x\n{{% include '{name}' %}}")
    with pytest.raises(TemplateError) as caught:
        _render(tree / "main.j2")
    message = str(caught.value)
    assert message.startswith(f"{tree / 'main.j2'}:2: TemplateNotFound: ") and why in message, message
    assert "SECRET" not in message and "root:" not in message


def test_an_edited_include_is_rendered_at_the_next_pass(tree: Path) -> None:
    (tree / "main.j2").write_text("{% include 'head.j2' %}")
    assert _render(tree / "main.j2") == "head\n"
    (tree / "head.j2").write_text("new head\n")
    os.utime(tree / "head.j2", (1, 2_000_000_000))  # a different mtime, whatever the clock's resolution
    assert _render(tree / "main.j2") == "new head\n"


def test_lbgen_render_with_an_include(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text("services:\n  web:\n    endpoints:\n      a: {address: 127.0.0.1, port: 8001}\n")
    (tmp_path / "endpoint.j2").write_text("{{ s.name }} {{ e.address }}:{{ e.port }}\n")
    (tmp_path / "t.j2").write_text(
        "# generated\n{% for s in services %}{% for e in s.endpoints %}{% include 'endpoint.j2' %}{% endfor %}{% endfor %}")
    (tmp_path / "lbgen.yaml").write_text("registry: file:registry.yaml\n"
                                         "targets:\n  - {name: out, template: t.j2, dest: out.txt, check: [test, -s, '{staged}']}\n")
    result = subprocess.run([sys.executable, "-m", "lbgen", "render", "-c", str(tmp_path / "lbgen.yaml")],
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "# generated\nweb 127.0.0.1:8001\n"
