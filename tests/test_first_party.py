"""The table of first-party plugins (nascore.first_party) matches plugins/, and a spec naming one of their
components without the plugin says which plugin provides it and how to install it."""
from __future__ import annotations

import ast
import importlib.metadata as md
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from installed import builtin_registry
from nascore.cli import main
from nascore.errors import NascoreError
from nascore.first_party import PLUGINS
from nascore.registry import FAMILIES, Source, get_registry
from plugin_code import module_from_code

REPO = Path(__file__).resolve().parents[1]
HOOK_KINDS = {hook: kind for kind, (hook, _) in FAMILIES.items()}


def _provided(folder: Path) -> set[tuple[str, str]]:
    """(kind, name) of every component the plugin's entry points return from their hooks, read from the
    sources (the plugin's dependencies need not be installed)."""
    found = set()
    entry_points = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["entry-points"]["nascore"]
    for module in entry_points.values():
        path = folder / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        imported = {a.asname or a.name: (path.parent / (node.module.replace(".", "/") + ".py"))
                    for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 1
                    for a in node.names}
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in HOOK_KINDS):
            (ret,) = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
            for element in ret.value.elts:
                found.add((HOOK_KINDS[fn.name], _class_name(imported.get(element.id, path), element.id)))
    return found


def _class_name(path: Path, cls: str) -> str:
    """The ``name`` class attribute of class ``cls`` defined in ``path``."""
    (node,) = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef) and n.name == cls]
    for stmt in node.body:
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else stmt.targets[0] if isinstance(
            stmt, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == "name":
            return ast.literal_eval(stmt.value)
    raise AssertionError(f"{cls} in {path} sets no name")


def test_the_table_matches_the_plugins_folder():
    folders = {p.parent.name: p.parent for p in (REPO / "plugins").glob("*/pyproject.toml")}
    assert {p.folder for p in PLUGINS} == set(folders)
    for plugin in PLUGINS:
        folder = folders[plugin.folder]
        assert tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"] == plugin.dist
        assert set(plugin.components) == _provided(folder), plugin.dist
        assert f"pip install -e plugins/{plugin.folder} " in (folder / "README.md").read_text()  # as the hint says


def test_installed_plugins_register_what_the_table_says():
    registry = get_registry()
    for plugin in PLUGINS:
        try:
            md.distribution(plugin.dist)
        except md.PackageNotFoundError:
            continue
        if any(p.source.dist == plugin.dist for p in registry.problems):
            continue  # installed without its dependency: test_installed_but_broken covers the message
        for kind, name in plugin.components:
            assert registry.entries[kind][name].source.dist == plugin.dist, (kind, name)


def _spec(tmp_path: Path, kind: str, name: str) -> Path:
    data = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    if kind == "task":
        data["tasks"] = [{"name": name}]
    else:
        data[kind] = {"name": name}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("kind, name, expected", [
    ("task", "detectron2", ("tasks[0].name: task 'detectron2' comes from the nascore-detectron2 plugin, which is "
                            "not installed: pip install -e plugins/detectron2 (needs detectron2 built from source, "
                            "see plugins/detectron2/README.md)")),
    ("task", "semantic-segmentation", ("tasks[0].name: task 'semantic-segmentation' comes from the "
                                       "nascore-segmentation plugin, which is not installed: pip install -e "
                                       "plugins/segmentation")),
    ("dataset", "mask-folder", ("dataset.name: dataset 'mask-folder' comes from the nascore-segmentation plugin, "
                                "which is not installed: pip install -e plugins/segmentation")),
])
def test_validate_names_the_plugin_and_the_install_command(tmp_path, capsys, monkeypatch, kind, name, expected):
    monkeypatch.setattr("nascore.spec.get_registry", builtin_registry)
    assert main(["validate", str(_spec(tmp_path, kind, name))]) == 2
    err = capsys.readouterr().err
    assert f"  {expected}\n" in err and "Traceback" not in err


def test_installed_but_broken(tmp_path):
    """nascore-segmentation installed without segmentation-models-pytorch: the real command says so, with the
    plugin's own reason."""
    try:
        md.distribution("nascore-segmentation")
    except md.PackageNotFoundError:
        pytest.skip("nascore-segmentation is not installed (pip install -e plugins/segmentation)")
    spec = str(_spec(tmp_path, "dataset", "mask-folder"))
    code = ("import sys\nsys.modules['segmentation_models_pytorch'] = None  # as if it were not installed\n"
            f"from nascore.cli import main\nraise SystemExit(main(['validate', {spec!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert ("  dataset.name: dataset 'mask-folder' comes from the nascore-segmentation plugin, which is installed "
            "but failed to load: failed to import: ImportError: nascore-segmentation needs "
            "segmentation-models-pytorch: pip install segmentation-models-pytorch") in proc.stderr


def test_an_installed_version_without_the_component():
    registry = builtin_registry()
    registry.register(module_from_code("old_smp_plugin", "x = 1"), Source("nascore_segmentation", "old = old_smp"))
    with pytest.raises(NascoreError) as exc:
        registry.get("dataset", "mask-folder")
    assert str(exc.value) == ("dataset 'mask-folder' comes from the nascore-segmentation plugin, but the installed "
                              "version does not provide it; reinstall: pip install -e plugins/segmentation")
