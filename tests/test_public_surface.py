"""The first-party plugins use only nascore's public surface: the names of ``nascore.__all__`` and the modules of
``nascore.PUBLIC_MODULES`` (a built-in family package's modules included)."""
from __future__ import annotations

import ast
from pathlib import Path

import nascore

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def public(module: str, names: list[str]) -> bool:
    if module == "nascore":
        return all(n in nascore.__all__ for n in names)
    return any(module == m or module.startswith(m + ".") for m in nascore.PUBLIC_MODULES)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "nascore":
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "nascore"]
    return found


def test_first_party_plugins_import_only_the_public_surface():
    sources = sorted(PLUGINS.glob("*/nascore_*/*.py"))
    assert sources, f"no plugin sources under {PLUGINS}"
    private = [f"{path.relative_to(PLUGINS)}:{line}: {module} {names}" for path in sources
               for module, names, line in imports(path) if not public(module, names)]
    assert not private, "imports outside nascore's public surface:\n" + "\n".join(private)


def test_the_check_sees_a_private_import():
    assert not public("nascore.run", ["run_spec"]) and not public("nascore", ["Registry"])
    assert public("nascore.tasks.segmentation", ["Segmentation"]) and public("nascore", ["NascoreError"])


def test_every_public_module_imports():
    import importlib

    for module in nascore.PUBLIC_MODULES:
        importlib.import_module(module)
