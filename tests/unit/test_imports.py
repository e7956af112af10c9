"""The import graph of sagellmd/: no cycle, and the lower layers never import the upper ones."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "sagellmd"

# store/, gpu/ and runtime/ are the edges the loop calls; the loop, the API and the CLI sit on
# top of them, so an import from an edge to one of these would run back up.
LOWER_LAYERS = ("sagellmd.store", "sagellmd.gpu", "sagellmd.runtime")
UPPER_LAYERS = ("sagellmd.reconcile", "sagellmd.api", "sagellmd.cli")
# The one module that assembles the upper layers into the daemon process.
COMPOSITION_ROOT = "sagellmd.daemon"
# What the daemon runs; the CLI is an HTTP client of it (cli/__init__.py names the offline
# commands that read this machine's files themselves, and none of them needs these).
DAEMON_SIDE = (
    "sagellmd.reconcile",
    "sagellmd.api",
    "sagellmd.store",
    "sagellmd.runtime",
    "sagellmd.engines",
    "sagellmd.daemon",
)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """Every sagellmd module that `path` imports, anywhere in the file.

    Imports inside functions count, and so do the ones under `if TYPE_CHECKING:`: a type-only
    import still makes the importer depend on the imported module's vocabulary, and a cycle
    through annotations is the same tangle of layers as one that runs at import time.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path, module)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    found.add(submodule)
                elif base in known:
                    found.add(base)
    found.discard(module)
    return found


def _import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    names = {path: _module_name(path, root) for path in paths}
    known = set(names.values())
    return {names[path]: _imported_modules(path, names[path], known) for path in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a cycle."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, component) for component in components]


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete path a -> ... -> a inside one strongly connected component."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start]
                if successor not in parents:
                    parents[successor] = node
                    following.append(successor)
        frontier = following
    return component


def _in_layer(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


def test_graph_sees_every_kind_of_import(tmp_path: Path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import pkg.b\nfrom pkg.sub import c\n",
        "b.py": "def later():\n    from .sub.c import name\n",
        "sub/__init__.py": "from . import c\n",
        "sub/c.py": (
            "from typing import TYPE_CHECKING\n"
            "from ..b import later\n"
            "if TYPE_CHECKING:\n    from pkg import a\n"
        ),
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = _import_graph(package)
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b", "pkg.sub.c"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.b", "pkg.a"},
    }
    assert _cycles(graph) == [["pkg.a", "pkg.sub.c", "pkg.a"]]


def test_graph_covers_the_package():
    graph = _import_graph()
    assert "sagellmd.store.repository" in graph
    assert "sagellmd.reconcile.loop" in graph["sagellmd.daemon"]


def test_no_import_cycle():
    cycles = _cycles(_import_graph())
    message = "\n".join(" -> ".join(cycle) for cycle in cycles)
    assert not cycles, f"import cycles in sagellmd/:\n{message}"


def test_lower_layers_never_import_upper_layers():
    violations = sorted(
        f"{module} imports {imported}"
        for module, imports in _import_graph().items()
        if _in_layer(module, LOWER_LAYERS)
        for imported in imports
        if _in_layer(imported, UPPER_LAYERS)
    )
    assert not violations, "imports that run back up:\n" + "\n".join(violations)


def test_shared_modules_never_import_upper_layers():
    """The vocabulary below the loop (instance.py, spec.py, metrics.py, models/ ...) too."""
    violations = sorted(
        f"{module} imports {imported}"
        for module, imports in _import_graph().items()
        if not _in_layer(module, UPPER_LAYERS) and module != COMPOSITION_ROOT
        for imported in imports
        if _in_layer(imported, UPPER_LAYERS)
    )
    assert not violations, "imports that run back up:\n" + "\n".join(violations)


def test_cli_never_imports_the_daemon_side():
    violations = sorted(
        f"{module} imports {imported}"
        for module, imports in _import_graph().items()
        if _in_layer(module, ("sagellmd.cli",))
        for imported in imports
        if _in_layer(imported, DAEMON_SIDE)
    )
    assert not violations, "the CLI reaches into the daemon:\n" + "\n".join(violations)


def test_python_client_imports_only_itself():
    """Applications import sagellmd.client alone: none of the daemon, the gateway or the CLI."""
    violations = sorted(
        f"{module} imports {imported}"
        for module, imports in _import_graph().items()
        if _in_layer(module, ("sagellmd.client",))
        for imported in imports
        if not _in_layer(imported, ("sagellmd.client",))
    )
    assert not violations, "the Python client reaches out:\n" + "\n".join(violations)
