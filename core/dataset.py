"""Dataset components: splits of (image, targets dict) samples and what they hold."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import default_collate

from .component import Component
from .errors import NascoreError, SpecError
from .protocols import Exporting
from .registry import Registry, get_registry
from .spec import ComponentSpec, validate_component


@dataclass(frozen=True)
class DataInfo:
    in_channels: int
    image_size: int
    #: number of classes per target key, e.g. {"label": 10, "semantic": 11}
    num_classes: dict[str, int]
    #: per-channel normalisation of the images, on a 0-1 scale (None: not known), for exporting models
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def targets(self) -> set[str]:
        return set(self.num_classes)


class Dataset(Component):
    kind: ClassVar[str] = "dataset"
    splits: ClassVar[tuple[str, ...]] = ("train", "val")

    def info(self) -> DataInfo:
        raise NotImplementedError

    def split(self, name: str) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def collate(self, batch: list[Any]) -> Any:
        return default_collate(batch)


def export_dataset(name: str, options: dict[str, Any], out_dir: str | Path, registry: Registry | None = None
                   ) -> dict[str, Path]:
    """Write every split of the installed dataset ``name`` (configured by ``options``; it must be ``Exporting``)
    under ``out_dir``: split name -> the file or folder written for it."""
    registry = registry or get_registry()
    cls = registry.get("dataset", name)
    try:
        config = validate_component(cls, options, "")
    except SpecError as exc:
        raise NascoreError(f"options of dataset '{name}' (--set) are not valid:\n"
                           + "\n".join(f"  {line}" for line in exc.errors)) from None
    if not issubclass(cls, Exporting):
        exportable = [n for n in registry.names("dataset") if issubclass(registry.get("dataset", n), Exporting)]
        raise NascoreError(f"dataset '{name}' cannot be exported (exportable: {', '.join(exportable) or 'none'})")
    return ComponentSpec("dataset", name, cls, config).create().export(out_dir)
