"""Built-in datasets: ``digit-scenes`` (generated, multitask) and ``image-folder`` (users' classification data)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator, model_validator
from torchvision import datasets as tvd
from torchvision import transforms as T

from nascore.component import ComponentConfig
from nascore.dataset import DataInfo, Dataset
from nascore.errors import NascoreError
from nascore.hookspecs import hookimpl

from . import digit_scenes as ds


class DigitScenes(Dataset):
    """1-3 handwritten digits (scikit-learn's scans) on textured backgrounds, labelled for classification,
    detection, semantic segmentation, saliency and edges; generated once and cached."""

    name: ClassVar[str] = "digit-scenes"
    splits: ClassVar[tuple[str, ...]] = ds.SPLITS

    class Config(ComponentConfig):
        image_size: int = Field(64, ge=16, le=512)
        num_train: int = Field(2000, ge=10)
        num_val: int = Field(400, ge=1)
        num_test: int = Field(400, ge=1)
        max_digits: int = Field(3, ge=1, le=5)
        #: digit side as a fraction of the image side
        min_scale: float = Field(0.25, gt=0, le=1)
        max_scale: float = Field(0.6, gt=0, le=1)
        seed: int = 0
        #: where generated splits are cached (default $NASCORE_CACHE or ~/.cache/nascore)
        cache_dir: str | None = None

        @model_validator(mode="after")
        def _scales(self) -> DigitScenes.Config:
            if self.min_scale > self.max_scale:
                raise ValueError(f"min_scale ({self.min_scale}) must not exceed max_scale ({self.max_scale})")
            return self

    def scene_config(self) -> ds.SceneConfig:
        c = self.config
        return ds.SceneConfig(image_size=c.image_size, num_train=c.num_train, num_val=c.num_val,
                              num_test=c.num_test, max_digits=c.max_digits, min_scale=c.min_scale,
                              max_scale=c.max_scale, seed=c.seed)

    def info(self) -> DataInfo:
        return DataInfo(3, self.config.image_size,
                        {"label": ds.NUM_CLASSES, "classes": ds.NUM_CLASSES, "semantic": ds.NUM_SEG_CLASSES,
                         "saliency": 1, "edges": 1})

    def split(self, name: str) -> torch.utils.data.Dataset:
        return ds.DigitScenes(self.scene_config(), name, cache_dir=self.config.cache_dir)

    def collate(self, batch: list[Any]) -> Any:
        return ds.collate(batch)

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """COCO-format JSON + PNG images and semantic masks per split (``nascore data export``)."""
        try:
            return ds.export_coco(self.scene_config(), out_dir, cache_dir=self.config.cache_dir)
        except FileExistsError as exc:
            raise NascoreError(str(exc)) from None


class _Labelled(torch.utils.data.Dataset):
    """(image, class index) -> (image, {"label": class index})."""

    def __init__(self, inner: tvd.ImageFolder):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        image, label = self.inner[i]
        return image, {"label": torch.tensor(label)}


class ImageFolder(Dataset):
    """A user's classification data: ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``."""

    name: ClassVar[str] = "image-folder"

    class Config(ComponentConfig):
        root: Path
        image_size: int = Field(64, ge=16, le=1024)

        @field_validator("root")
        @classmethod
        def _layout(cls, root: Path) -> Path:
            classes = {}
            for split_name in ("train", "val"):
                folder = root / split_name
                if not folder.is_dir():
                    raise ValueError(f"expected a folder {folder} with one sub-folder per class")
                classes[split_name] = _class_names(folder)
                if not classes[split_name]:
                    raise ValueError(f"{folder} has no class sub-folders")
            if classes["val"] != classes["train"]:
                raise ValueError(f"class folders of {root / 'val'} {classes['val']} differ from those of "
                                 f"{root / 'train'} {classes['train']}")
            return root

    def _classes(self) -> list[str]:
        return _class_names(self.config.root / "train")

    def info(self) -> DataInfo:
        return DataInfo(3, self.config.image_size, {"label": len(self._classes())})

    def split(self, name: str) -> torch.utils.data.Dataset:
        size = self.config.image_size
        transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                               T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        try:
            return _Labelled(tvd.ImageFolder(str(self.config.root / name), transform=transform))
        except (FileNotFoundError, OSError) as exc:  # e.g. a class folder without images
            raise NascoreError(f"dataset image-folder: {exc}") from None


def _class_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@hookimpl
def nascore_datasets():
    return [DigitScenes, ImageFolder]
