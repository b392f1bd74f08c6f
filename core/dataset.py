"""Dataset components: splits of (image, targets dict) samples and what they hold."""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.utils.data import default_collate

from .component import Component


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
    #: config fields that say where files are kept, not what the data is (a cache folder): left out wherever two
    #: datasets are compared (``without_locations``)
    locations: ClassVar[frozenset[str]] = frozenset()

    def without_locations(self, block: dict[str, Any]) -> dict[str, Any]:
        """A dump of this dataset's spec block (``{"name": ..., **config}``) without the ``locations`` fields: what
        the data is."""
        return {k: v for k, v in block.items() if k not in self.locations}

    @abstractmethod
    def info(self) -> DataInfo:
        """What the samples hold: channels, image size, classes per target, normalisation."""

    @abstractmethod
    def split(self, name: str) -> torch.utils.data.Dataset:
        """The samples of split ``name`` (one of ``splits``), each ``(image, targets dict)``."""

    def collate(self, batch: list[Any]) -> Any:
        return default_collate(batch)
