"""nascore-segmentation installed with pip from its folder registers through the ``nascore`` entry point."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1]


def test_pip_install_from_the_folder_registers_task_and_dataset(tmp_path):
    src, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("tests", "*.egg-info", "build", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "--target", str(site), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = ("from importlib.metadata import entry_points\n"
            "(ep,) = [e for e in entry_points(group='nascore') if e.name == 'segmentation-smp']\n"
            "from nascore.registry import Registry\nr = Registry.from_entry_points()\n"
            "print(ep.dist.locate_file(''), r.get('task', 'semantic-segmentation').__module__,\n"
            "      r.get('dataset', 'mask-folder').__module__)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    location, task_module, dataset_module = run.stdout.split()
    assert Path(location) == site
    assert (task_module, dataset_module) == ("nascore_segmentation.task", "nascore_segmentation.data")
