"""CONTRIBUTING.md stays true. Its worked plugins, a cost model, a search strategy and a search space, are taken
from the document's fenced blocks (each names its file on its first line, e.g. ``# nascore-evolution/pyproject.toml``),
written into a temporary folder, built from their pyproject.toml and pip-installed into a throwaway site
directory (``plugin_code.pip_install``: nascore finds their entry points as for a reader's ``pip install``);
then their own tests run (each a tiny search), their example specs validate, and the strategy is interrupted
and resumed."""
from __future__ import annotations

import importlib.util
import inspect
import json
import re
from pathlib import Path

import pytest

from nascore.cli import main
from nascore.registry import get_registry
from plugin_code import importable, pip_install

DOC = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"
#: the worked plugins: distribution (its folder in the document) -> (package, kind, component name)
PLUGINS = {"nascore-params-budget": ("nascore_params_budget", "cost", "kilo-params"),
           "nascore-evolution": ("nascore_evolution", "strategy", "one-shot-evolution"),
           "nascore-kernel-chain": ("nascore_kernel_chain", "space", "kernel-chain")}
FILES = ["pyproject.toml", "src/{package}/__init__.py", "tests/test_plugin.py", "example.yaml"]
#: commands that must run through the virtual environment (``.venv/bin/...``), as in the README
VENV_COMMANDS = {"pip", "pip3", "python", "nascore", "pytest", "twine"}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def doc_files() -> dict[str, str]:
    """The blocks that are files of a worked plugin, by path (``<distribution>/<path in it>``)."""
    files: dict[str, str] = {}
    for _, body in fenced_blocks(DOC.read_text()):
        named = re.fullmatch(r"# (nascore-[\w-]+/\S+)", body.partition("\n")[0])
        if named:
            assert named[1] not in files, f"CONTRIBUTING.md has two blocks for {named[1]}"
            files[named[1]] = body
    return files


def test_the_document_holds_every_file_of_every_plugin():
    expected = {f"{dist}/{f.format(package=package)}" for dist, (package, _, _) in PLUGINS.items() for f in FILES}
    assert set(doc_files()) == expected


def test_commands_run_in_the_virtual_environment():
    text = DOC.read_text()
    bare = []
    for lang, body in fenced_blocks(text):
        if lang != "bash":
            continue
        for line in body.splitlines():
            for command in re.split(r"&&|\|\||;|\|", line.partition("#")[0]):
                words = command.split()
                if words and words[0] in VENV_COMMANDS:
                    bare.append(line)
    assert bare == []
    assert "`core/hookspecs.py`" in text and "`nascore.hookspecs`" in text and "nascore/hookspecs.py" not in text


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """The worked plugins written from the document, installed and visible to this process; yields their
    folders by distribution."""
    root = tmp_path_factory.mktemp("contributing")
    for path, body in doc_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body)
    site = root / "site"
    for dist in PLUGINS:
        pip_install(root / dist, site)
    with importable(site, [package for package, _, _ in PLUGINS.values()]):
        yield {dist: root / dist for dist in PLUGINS}


@pytest.mark.slow
def test_nascore_plugins_lists_them(plugins, capsys):
    assert main(["plugins"]) == (1 if get_registry().problems else 0)  # 1: an installed plugin failed to load
    lines = capsys.readouterr().out.splitlines()
    for dist, (_, kind, name) in PLUGINS.items():
        assert [line.split() for line in lines if f" {name} " in line] == [[kind, name, dist, "ok"]], lines
    assert not [p for p in get_registry().problems if p.source.dist in PLUGINS]


@pytest.mark.slow
@pytest.mark.parametrize("dist", PLUGINS)
def test_the_example_spec_validates(plugins, dist, capsys):
    assert main(["validate", str(plugins[dist] / "example.yaml")]) == 0
    assert capsys.readouterr().out == "ok\n"


@pytest.mark.slow
@pytest.mark.parametrize("dist", PLUGINS)
def test_the_plugins_own_tests_pass(plugins, dist, tmp_path):
    """The plugin's tests/test_plugin.py, imported from its folder; each test function is called (tmp_path is
    the one fixture they may use)."""
    path = plugins[dist] / "tests" / "test_plugin.py"
    spec = importlib.util.spec_from_file_location(f"contributing_{PLUGINS[dist][0]}_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [(name, fn) for name, fn in vars(module).items() if name.startswith("test_") and callable(fn)]
    assert tests
    for name, fn in tests:
        params = set(inspect.signature(fn).parameters)
        assert params <= {"tmp_path"}, f"{path}::{name} wants fixtures {params - {'tmp_path'}}"
        (tmp_path / name).mkdir()
        fn(**({"tmp_path": tmp_path / name} if params else {}))


@pytest.mark.slow
def test_the_strategy_resumes_where_it_stopped(plugins, tmp_path, monkeypatch):
    """Interrupted after its first epoch and resumed, the worked strategy ends exactly as an uninterrupted run."""
    tiny = {"dataset.num_train": 48, "dataset.num_val": 16, "dataset.cache_dir": tmp_path / "cache",
            "strategy.epochs": 2, "strategy.batch_size": 16, "strategy.max_steps": 2, "strategy.population": 4,
            "strategy.bn_batches": 1, "pareto.samples": 2}
    example = plugins["nascore-evolution"] / "example.yaml"

    def run(out: Path, *extra: str) -> int:
        return main(["run", str(example), "--out", str(out), *(f"--set={k}={v}" for k, v in tiny.items()), *extra])

    assert run(tmp_path / "whole") == 0
    cls = get_registry().get("strategy", "one-shot-evolution")
    first_epoch_only = cls.run_epoch

    def interrupted(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return first_epoch_only(self, epoch)

    monkeypatch.setattr(cls, "run_epoch", interrupted)
    assert run(tmp_path / "resumed") == 130
    monkeypatch.undo()
    assert run(tmp_path / "resumed", "--resume") == 0
    for name in ("arch.json", "metrics.jsonl", "pareto.csv"):
        whole, resumed = (tmp_path / run_dir / name for run_dir in ("whole", "resumed"))
        assert resumed.read_text() == whole.read_text(), name
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
