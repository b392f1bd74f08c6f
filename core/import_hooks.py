"""Run code when a module is imported, without importing it (a post-import hook, as wrapt's ``when_imported``).

nascore uses it to publish its archs to timm once the user imports timm: ``import nascore`` itself imports
nothing heavy (torch, timm, torchvision), so that ``nascore --help`` starts at once.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType

_waiting: dict[str, list[Callable[[], None]]] = {}  # module name -> what runs once it is imported
_finding: set[str] = set()  # names this finder is looking up through the other finders


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` now if module ``name`` is imported, else right after its import finishes."""
    if name in _waiting:  # not imported yet, or being imported now
        _waiting[name].append(callback)
    elif name in sys.modules:
        callback()
    else:
        _waiting[name] = [callback]
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


class _Finder:
    """A ``sys.meta_path`` finder: finds a waited-for module with the other finders and hands its import to a
    :class:`_Loader`."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if fullname not in _waiting or fullname in _finding:
            return None
        _finding.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            _finding.discard(fullname)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


class _Loader:
    """The module's own loader, then the callbacks waiting for it."""

    def __init__(self, loader: Loader):
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__.loader = module.__loader__ = self.loader  # the module keeps its own loader
        self.loader.exec_module(module)
        callbacks = _waiting.pop(module.__name__, [])
        if not _waiting:
            sys.meta_path.remove(_FINDER)
        for callback in callbacks:
            callback()


_FINDER = _Finder()
