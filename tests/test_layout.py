"""The package's layout rules, checked on the source: no import cycle, no module over 800 lines,
a one-way presentation layer, and ``__all__`` in every public module.

Imports are read with :mod:`ast` (also those inside functions, relative and absolute), so a lazy
``import`` inside a function counts: it still runs, just later. Names served by
``toolkit._deprecated.moved`` are strings, not imports, and are not edges.
"""

from __future__ import annotations

import ast
import importlib
import warnings
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "toolkit"
MAX_LINES = 800
ANALYSIS = ("ntk", "collapse", "hessian", "landscape", "pruning", "spectra", "landscape_convergence",
            "pruning_bounds", "sharpness", "batches", "train", "_matrices")
PRESENTATION = ("plotting", "widgets")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom in the tree, including function bodies, except under
    ``if TYPE_CHECKING:`` (never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The toolkit modules an import statement executes (before excluding ancestors)."""
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        subs: list[str] = []
    else:
        if node.level:
            here = importer if _is_package(MODULES[importer]) else importer.rpartition(".")[0]
            parts = here.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1])
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        bases = [base]
        # ``from pkg import name``: name is a submodule when such a file exists
        subs = [f"{base}.{alias.name}" for alias in node.names
                if f"{base}.{alias.name}" in MODULES]
    out = set()
    for mod in [*bases, *subs]:
        if mod != "toolkit" and not mod.startswith("toolkit."):
            continue
        # importing a.b.c runs the __init__ of a.b and a first: those count too
        out |= {m for m in _ancestors(mod) | {mod} if m in MODULES}
    return out


@cache
def import_graph() -> dict[str, set[str]]:
    """module -> the toolkit modules its source imports.

    A module's own ancestor packages are left out: Python initialises them before the module
    itself, whatever the module imports, so ``pkg/__init__`` → ``pkg.sub`` → ``pkg`` is the normal
    shape of a package, not a cycle."""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _import_nodes(tree):
            edges |= _targets(name, node)
        graph[name] = edges - _ancestors(name) - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _path_to(graph: dict[str, set[str]], start: str, goal) -> list[str] | None:
    """A shortest import chain from ``start`` to a module satisfying ``goal`` (breadth first)."""
    parents: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node != start and goal(node):
            chain = [node]
            while parents[chain[-1]] is not None:
                chain.append(parents[chain[-1]])
            return chain[::-1]
        for nxt in sorted(graph.get(node, ())):
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return None


def _in_topic(name: str, topics) -> bool:
    parts = name.split(".")
    return len(parts) > 1 and parts[1] in topics


# ------------------------------------------------------------------------ the checker itself


def test_graph_reader_sees_relative_absolute_lazy_and_package_imports():
    graph = import_graph()
    # relative, at the top: widgets.panel -> plotting.base, which runs plotting/__init__ first
    assert {"toolkit.plotting", "toolkit.plotting.base"} <= graph["toolkit.widgets.panel"]
    # ``from .. import landscape`` names a submodule, not an attribute of the package
    assert "toolkit.landscape" in graph["toolkit.widgets.landscape"]
    # own ancestors are not edges
    assert "toolkit.plotting" not in graph["toolkit.plotting.landscape"]


def test_cycle_finder_reports_the_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None
    lazy = ast.parse("def f():\n    from .plotting import base\n")
    assert [type(n).__name__ for n in _import_nodes(lazy)] == ["ImportFrom"]
    guarded = ast.parse("if TYPE_CHECKING:\n    from . import widgets\n")
    assert list(_import_nodes(guarded)) == []


# ------------------------------------------------------------------------------- the rules


def test_no_import_cycle_in_the_package():
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(MODULES), ids=str)
def test_no_module_over_800_lines(name):
    n = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, (f"{MODULES[name].relative_to(ROOT)} has {n} lines (> {MAX_LINES}): "
                            "split the topic into a subpackage whose __init__ re-exports it")


@pytest.mark.parametrize("name", sorted(m for m in MODULES if _in_topic(m, ("plotting",))),
                         ids=str)
def test_plotting_never_imports_widgets(name):
    chain = _path_to(import_graph(), name, lambda m: _in_topic(m, ("widgets",)))
    assert chain is None, "plotting reaches widgets: " + " -> ".join(chain)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if _in_topic(m, ANALYSIS)), ids=str)
def test_analysis_never_imports_plotting_or_widgets(name):
    chain = _path_to(import_graph(), name, lambda m: _in_topic(m, PRESENTATION))
    assert chain is None, "an analysis module reaches the presentation layer: " + " -> ".join(chain)


PUBLIC = sorted(m for m in MODULES if not any(part.startswith("_") for part in m.split(".")))


@pytest.mark.parametrize("name", PUBLIC, ids=str)
def test_public_module_has_a_valid_all(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # a deprecated shim may warn on import
        module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{name} defines no __all__"
    assert all(isinstance(n, str) for n in names), f"{name}.__all__ holds non-strings"
    assert len(set(names)) == len(names), f"{name}.__all__ lists a name twice"
    with warnings.catch_warnings():
        # a name in __all__ must not be a deprecated alias
        warnings.simplefilter("error", DeprecationWarning)
        missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"
