"""``nascore data export``: an installed dataset that can export itself (``nascore.protocols.Exporting``) written
out, e.g. digit-scenes as COCO JSON + PNG masks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import NascoreError
from .protocols import Exporting
from .registry import Registry, get_registry
from .spec import validate_options
from .spec_model import ComponentSpec


def export_dataset(name: str, options: dict[str, Any], out_dir: str | Path, registry: Registry | None = None
                   ) -> dict[str, Path]:
    """Write every split of the installed dataset ``name`` (configured by ``options``; it must be ``Exporting``)
    under ``out_dir``: split name -> the file or folder written for it."""
    registry = registry or get_registry()
    cls = registry.get("dataset", name)
    config = validate_options(cls, options)
    if not issubclass(cls, Exporting):
        exportable = [n for n in registry.names("dataset") if issubclass(registry.get("dataset", n), Exporting)]
        raise NascoreError(f"dataset '{name}' cannot be exported (exportable: {', '.join(exportable) or 'none'})")
    return ComponentSpec("dataset", name, cls, config).create().export(out_dir)
