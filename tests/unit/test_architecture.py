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


@pytest.mark.parametrize("module", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_no_io(module: Path) -> None:
    assert not _imported_roots(module) & FORBIDDEN, f"{module.name} imports I/O modules"


def test_core_has_modules() -> None:
    assert len(list(CORE.rglob("*.py"))) >= 3


MAX_MODULE_LINES = 400  # issue 11: a module past this has two jobs; split it where they part


def test_no_module_over_the_size_limit() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path in CORE.parent.rglob("*.py")}
    assert sizes, "no modules found"
    too_big = {str(path.relative_to(CORE.parent)): lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_big, f"modules over {MAX_MODULE_LINES} lines: {too_big}"


def test_values_are_defined_one_way() -> None:
    """Value classes are msgspec Structs: no lbgen module imports dataclasses (defining a frozen
    dataclass took 0.44 ms at import, a Struct 0.009 ms: replacing them cut a one-shot render's
    imports by ~24 ms, issue 13)."""
    using = sorted(str(path.relative_to(CORE.parent)) for path in CORE.parent.rglob("*.py")
                   if "dataclasses" in _imported_roots(path))
    assert not using, f"modules importing dataclasses: {using}"


# --- The import graph (issue 11): no circle, and imports point only down the layers ---------------

PACKAGE = CORE.parent
LAYERS = {"core": 0, "errors": 0, "ports": 1, "adapters": 2, "services": 3, "cli": 4, "__main__": 4}
# Exceptions, each to be removed by the change that ends it (never add one). None left: the value
# types moved from ports.py to lbgen.core.values, and etcd_store and etcd_watch share etcd_connection.
UPWARD_EXCEPTIONS: set[tuple[str, str]] = set()
CIRCLE_EXCEPTIONS: list[set[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every lbgen module → the lbgen modules it imports (anywhere in the file)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(resolve(a.name) for a in node.names if a.name.startswith("lbgen."))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lbgen"):
                found.update(resolve(f"{node.module}.{a.name}") for a in node.names)
        graph[name] = found - {name, "lbgen", ""}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while (w := stack.pop()) != v:
                component.add(w)
            if component:
                found.append(component | {v})

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle() -> None:
    circles = _circles(_import_graph())
    assert [c for c in circles if c not in CIRCLE_EXCEPTIONS] == []
    assert [c for c in CIRCLE_EXCEPTIONS if c not in circles] == [], "a listed circle is gone: drop it from the list"


def test_imports_point_down_the_layers() -> None:
    graph = _import_graph()
    upward = {(m, d) for m, deps in graph.items() for d in deps
              if None not in (_layer(m), _layer(d)) and _layer(d) > _layer(m)}  # type: ignore[operator]
    assert upward - UPWARD_EXCEPTIONS == set(), "a lower layer imports a higher one: core < ports < adapters < ..."
    assert UPWARD_EXCEPTIONS - upward == set(), "a listed exception is gone: drop it from the list"


def test_the_graph_check_sees_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _circles({"a": {"b"}, "b": set()}) == []


# --- A room per LB kind (issue 11): only the kinds packages name a kind ---------------------------


def test_only_the_kinds_packages_name_a_kind() -> None:
    """A new kind is a module in `lbgen/core/kinds/` and one in `lbgen/adapters/kinds/`: no other
    module may hold a kind's name as a string (a `kind == "nginx"` branch elsewhere)."""
    from lbgen.core.kinds import kind_names

    names = set(kind_names()) - {"generic"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "kinds" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert found == []
