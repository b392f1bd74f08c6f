"""nascore: plugin-based neural architecture search for PyTorch.

The names below are imported when first used (PEP 562), so that ``import nascore`` (and ``nascore --help``) loads
neither torch nor timm. After ``import nascore``, importing timm also makes every named arch a timm model,
``timm.create_model("nascore_<name>")``: nascore then loads its plugins, and its timm integration (a plugin,
``nascore.deploy.timm_models``) registers them.
"""
from __future__ import annotations

import importlib
from typing import Any

import wrapt

__version__ = "0.1.0"
# name -> the module that defines it. build_network, check_finite, evaluate_arch, loader, task_losses, to_device,
# train_step: what a search strategy's loop is made of (CONTRIBUTING.md, "Part 2: a search strategy")
_EXPORTS = {
    "Arch": "arch", "Backbone": "features", "Component": "component", "ComponentConfig": "component",
    "CostEstimate": "protocols", "CostModel": "cost", "CostTable": "supernet", "DataInfo": "dataset",
    "Dataset": "dataset", "Decision": "supernet", "Distributing": "protocols", "Evaluating": "protocols",
    "ExportResult": "hookspecs", "Exporting": "protocols", "GraphOperation": "protocols", "Int8Result": "hookspecs",
    "MixedOp": "supernet", "MultiTaskBackbone": "protocols", "NascoreError": "errors", "Network": "task",
    "Parts": "parts", "PartsView": "hookspecs", "Predictor": "predictor", "RegistryView": "hookspecs",
    "RunView": "hookspecs", "SHARED": "strategy", "Sample": "predictor",
    "Sampling": "protocols", "SearchContext": "strategy", "SearchSpace": "space", "SearchStrategy": "strategy",
    "Supernet": "supernet", "Task": "task", "build_network": "task", "check_finite": "loops",
    "evaluate_arch": "strategy",
    "hookimpl": "hookspecs", "loader": "data", "register_timm_model": "deploy.timm_models", "task_losses": "loops",
    "to_device": "data", "train_step": "loops",
}
__all__ = sorted(_EXPORTS)
#: what a plugin may import besides the names above: the contract, reading and writing user files, arch files,
#: specs and run directories, and the built-in families (a plugin may extend a built-in component). Everything else
#: is nascore's own and may change; tests/test_public_surface.py holds the first-party plugins to this.
PUBLIC_MODULES = ("nascore.hookspecs", "nascore.protocols", "nascore.component", "nascore.errors", "nascore.fileio",
                  "nascore.arch", "nascore.features", "nascore.dataset", "nascore.spec", "nascore.rundir",
                  "nascore.spaces", "nascore.tasks", "nascore.strategies", "nascore.costs")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nascore' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _publish_to_timm() -> None:
    """Load the plugins, so that the timm integration registers their named archs with timm. A registry of its own,
    not the process-wide one (``get_registry()``): timm can be imported by a plugin that is being imported itself,
    which then fails to load here; the process-wide registry loads it later, whole."""
    from .registry import Registry  # here, not above: `import nascore` loads no plugin machinery

    Registry.from_entry_points()


wrapt.register_post_import_hook(lambda _timm: _publish_to_timm(), "timm")  # now, if timm is imported
