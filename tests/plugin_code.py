"""Test plugins: modules made from source text, for registry unit tests, and throwaway distributions
installed with pip (external registration is proven with them in test_plugins.py)."""
from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nascore.registry import get_registry


def module_from_code(name: str, code: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(textwrap.dedent(code), module.__dict__)
    return module


#: a task whose target ("depth") digit-scenes does not have
DEPTH_TASK = '''
    from typing import ClassVar

    import torch
    import torchmetrics

    import nascore
    from nascore import hookimpl

    class Depth(nascore.Task):
        """Per-pixel depth regression."""
        name: ClassVar[str] = "depth"
        target: ClassVar[str] = "depth"
        primary_metric: ClassVar[str] = "l1"

        def build_head(self, feature_info, pre_logits, data):
            return torch.nn.Conv2d(feature_info[0]["num_chs"], 1, 1)

        def loss(self, output, targets):
            return torch.nn.functional.l1_loss(output, targets[self.target])

        def metrics(self, device):
            return torchmetrics.MeanAbsoluteError().to(device)

    @hookimpl
    def nascore_tasks():
        return [Depth]
'''


def install_distribution(root: Path, dist: str, package: str, modules: dict[str, str],
                         entry_points: dict[str, str]) -> Path:
    """Build distribution ``dist`` (package ``package`` of ``modules``: name -> source; ``entry_points`` in group
    ``nascore``: name -> module) under ``root`` and pip install it into the site directory ``root/site``, which
    is returned: put it on ``sys.path`` / ``PYTHONPATH`` and ``importlib.metadata`` finds its entry points as for
    a plugin installed into the environment, and nothing is left in the environment if the session dies."""
    src, target = root / "src", root / "site"
    (src / package).mkdir(parents=True)
    (src / package / "__init__.py").write_text(f'"""Throwaway nascore plugins ({dist}) for the test suite."""\n')
    for module, code in modules.items():
        (src / package / f"{module}.py").write_text(textwrap.dedent(code).lstrip())
    eps = "\n".join(f'{name} = "{package}.{module}"' for name, module in entry_points.items())
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.0.1"

        [project.entry-points.nascore]
        """) + eps + f'\n\n[tool.setuptools]\npackages = ["{package}"]\n')
    pip_install(src, target)
    assert (target / package).is_dir() and list(target.glob(f"{package}-*.dist-info"))
    return target


def pip_install(src: Path, target: Path) -> Path:
    """Build the distribution whose pyproject.toml is in ``src`` and pip install it into the site directory
    ``target`` (no dependencies, no index, no build isolation: the environment's setuptools builds it), which is
    returned; see ``install_distribution`` and ``importable``."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


@contextmanager
def importable(site: Path, packages: Iterable[str]) -> Iterator[Path]:
    """Within the block, this process sees the distributions installed in ``site`` as installed plugins (their
    modules import, ``importlib.metadata`` and the registry find their entry points); afterwards nothing of them
    is left: ``site`` leaves ``sys.path``, the modules of ``packages`` are forgotten, the registry cache is
    cleared."""
    packages = set(packages)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    get_registry.cache_clear()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m.partition(".")[0] in packages]:
            del sys.modules[name]
        importlib.invalidate_caches()
        get_registry.cache_clear()
