"""The import graph of nascore's modules has no circle: every import counts, at module level, inside a function or
under ``TYPE_CHECKING``, so no circle hides behind an import that runs late."""
from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import nascore

REPO = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    """Every nascore module by its dotted name, from pyproject.toml's package-dir mapping."""
    folders = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in folders.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            found[".".join([package, *parts[:-1]] if parts[-1] == "__init__" else [package, *parts])] = path
    return found


def imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The nascore modules that ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}"
                elif base == "nascore" and alias.name in nascore._EXPORTS:  # the package's lazy exports
                    yield f"nascore.{nascore._EXPORTS[alias.name]}"
                elif base in known:
                    yield base


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: set(imported(name, path, set(found))) - {name} for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_kind_of_import():
    edges = graph()
    assert "nascore.registry" in edges["nascore.arch"]  # module level, relative
    assert "nascore.registry" in edges["nascore"]  # inside a function
    assert "nascore.loops" in edges["nascore.strategy"]  # a lazy export of the package


def test_no_import_circle():
    found = circles(graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
