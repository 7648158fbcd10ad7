"""The layering stays true by itself: the pure core imports no I/O."""

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "lbgen" / "core"
FORBIDDEN = {
    "socket", "subprocess", "os", "shutil", "threading", "time", "requests", "urllib",
    "docker", "pyetcd", "grpc", "watchdog", "http", "tempfile", "signal", "pathlib",
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_does_no_io(module: Path) -> None:
    assert not _imported_roots(module) & FORBIDDEN, f"{module.name} imports I/O modules"


def test_core_has_modules() -> None:
    assert len(list(CORE.glob("*.py"))) >= 3
