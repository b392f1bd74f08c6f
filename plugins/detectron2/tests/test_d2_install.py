"""The plugin installed with pip from its folder registers through the ``nascore`` entry point; without
detectron2, ``nascore plugins`` shows it unavailable with the reason. Runs with or without detectron2."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("d2site")
    src, target = root / "src", root / "site"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("tests", "*.egg-info", "build", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "nascore_detectron2").is_dir() and list(target.glob("nascore_detectron2-*.dist-info"))
    return target


def run(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_the_entry_point_comes_from_the_installed_distribution(site):
    proc = run(site, "from importlib.metadata import entry_points\n"
                     "(ep,) = [e for e in entry_points(group='nascore') if e.name == 'detectron2']\n"
                     "print(ep.value, ep.dist.name, ep.dist.locate_file(''))")
    assert proc.returncode == 0, proc.stderr
    value, dist, location = proc.stdout.split()
    assert (value, dist) == ("nascore_detectron2.plugin", "nascore-detectron2")
    assert Path(location) == site


def test_without_detectron2_the_plugin_is_unavailable_with_the_reason(site):
    proc = run(site, "import sys\nsys.modules['detectron2'] = None  # as if it were not installed\n"
                     "from nascore.cli import main\nraise SystemExit(main(['plugins']))")
    out = proc.stdout + proc.stderr
    assert "nascore-detectron2" in out and "needs detectron2" in out and "install it from source" in out
    assert "classification" in out  # the other plugins stay usable


@pytest.mark.skipif(importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed (see plugins/detectron2/README.md)")
def test_with_detectron2_the_task_registers(site):
    proc = run(site, "from nascore.registry import Registry\nr = Registry.from_entry_points()\n"
                     "cls = r.get('task', 'detectron2')\n"
                     "print(cls.__module__, [str(p) for p in r.problems if p.source.dist == 'nascore-detectron2'])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "nascore_detectron2.task" and "[]" in proc.stdout
