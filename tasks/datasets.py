"""Built-in datasets: ``digit-scenes`` (generated, multitask), ``image-folder`` (users' classification data) and
``coco`` (users' detection data in COCO format)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from nascore.component import ComponentConfig
from nascore.dataset import DataInfo, Dataset
from nascore.errors import NascoreError
from nascore.fileio import IMAGE_MAX_BYTES, check_user_file, human_size, open_user_image
from nascore.hookspecs import hookimpl
from nascore.protocols import Exporting

from . import digit_scenes as ds
from .coco_json import read_coco

if TYPE_CHECKING:  # torchvision is imported where data is read: `nascore validate` does without it
    from torchvision import datasets as tvd

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DigitScenes(Dataset, Exporting):
    """1-3 handwritten digits (scikit-learn's scans) on textured backgrounds, labelled for classification,
    detection, semantic segmentation, saliency and edges; generated once and cached."""

    name: ClassVar[str] = "digit-scenes"
    splits: ClassVar[tuple[str, ...]] = ds.SPLITS
    locations: ClassVar[frozenset[str]] = frozenset({"cache_dir"})

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

        @model_validator(mode="after")
        def _memory(self) -> DigitScenes.Config:
            """A split is generated and held in memory whole: its size is checked before it is made."""
            for split in ("num_train", "num_val", "num_test"):
                need = getattr(self, split) * self.image_size ** 2 * ds.BYTES_PER_PIXEL
                if need > ds.MAX_SPLIT_BYTES:
                    raise ValueError(f"{split} {getattr(self, split)} at image_size {self.image_size} is "
                                     f"{human_size(need)} in memory; expected at most {human_size(ds.MAX_SPLIT_BYTES)}")
            return self

    def scene_config(self) -> ds.SceneConfig:
        c = self.config
        return ds.SceneConfig(image_size=c.image_size, num_train=c.num_train, num_val=c.num_val,
                              num_test=c.num_test, max_digits=c.max_digits, min_scale=c.min_scale,
                              max_scale=c.max_scale, seed=c.seed)

    def info(self) -> DataInfo:
        return DataInfo(3, self.config.image_size,
                        {"label": ds.NUM_CLASSES, "classes": ds.NUM_CLASSES, "semantic": ds.NUM_SEG_CLASSES,
                         "saliency": 1, "edges": 1}, ds.MEAN, ds.STD)

    def split(self, name: str) -> torch.utils.data.Dataset:
        return ds.SceneSplit(self.scene_config(), name, cache_dir=self.config.cache_dir)

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
        return DataInfo(3, self.config.image_size, {"label": len(self._classes())}, IMAGENET_MEAN, IMAGENET_STD)

    def split(self, name: str) -> torch.utils.data.Dataset:
        from torchvision import datasets as tvd  # torchvision: `nascore validate` loads none (tests/test_startup.py)
        from torchvision import transforms as T  # torchvision: as above

        size = self.config.image_size
        transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                               T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        try:
            return _Labelled(tvd.ImageFolder(str(self.config.root / name), transform=transform, loader=_rgb,
                                             is_valid_file=_image_file))
        except (FileNotFoundError, OSError) as exc:  # e.g. a class folder without images
            raise NascoreError(f"dataset image-folder: {exc}") from None
        except NascoreError as exc:
            raise NascoreError(f"dataset image-folder: {exc}") from None


def _image_file(path: str) -> bool:
    """An image of a class folder (by its extension); one that is no regular file (a FIFO, a dangling symlink)
    is an error, not skipped."""
    # torchvision: `nascore validate` loads none (tests/test_startup.py)
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not path.lower().endswith(IMG_EXTENSIONS):
        return False
    check_user_file(path, "image", IMAGE_MAX_BYTES)
    return True


def _rgb(path: str) -> Any:
    try:
        return open_user_image(path, "image").convert("RGB")
    except NascoreError as exc:
        raise NascoreError(f"dataset image-folder: {exc}") from None


class COCOSplit(torch.utils.data.Dataset):
    """One split of a COCO-format detection dataset, every image resized to ``size`` x ``size`` (boxes scaled):
    ``boxes`` (xyxy pixels), ``classes`` (contiguous indices of the sorted category ids) and, when every
    annotation has a segmentation, ``semantic`` (class c painted as c + 1 from the instance masks)."""

    def __init__(self, coco: Any, images: Path, size: int, category_ids: list[int]):
        from torchvision import transforms as T  # torchvision: as above

        self.coco, self.images, self.size = coco, images, size
        self.ids = sorted(self.coco.getImgIds())
        self.index = {c: i for i, c in enumerate(category_ids)}
        self.has_masks = all("segmentation" in a for a in self.coco.dataset["annotations"])
        self.transform = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from PIL import Image  # Pillow: only when an image file is read

        info = self.coco.imgs[self.ids[i]]
        path = self.images / info["file_name"]
        try:
            image = open_user_image(path, "image").convert("RGB")
        except NascoreError as exc:
            raise NascoreError(f"dataset coco: {exc}") from None
        sx, sy = self.size / image.width, self.size / image.height
        anns = [a for a in self.coco.imgToAnns[self.ids[i]] if not a.get("iscrowd", 0)]
        # pycocotools draws the masks at the size the annotations give
        if self.has_masks and anns and (info.get("width"), info.get("height")) != image.size:
            raise NascoreError(f"dataset coco: image {path} is {image.width}x{image.height}; its annotations say "
                               f"{info.get('width')}x{info.get('height')}")
        boxes = torch.tensor([[a["bbox"][0] * sx, a["bbox"][1] * sy, (a["bbox"][0] + a["bbox"][2]) * sx,
                               (a["bbox"][1] + a["bbox"][3]) * sy] for a in anns], dtype=torch.float32)
        targets = {"boxes": boxes.reshape(-1, 4),
                   "classes": torch.tensor([self.index[a["category_id"]] for a in anns], dtype=torch.long)}
        if self.has_masks:
            semantic = np.zeros((image.height, image.width), dtype=np.uint8)
            for a in anns:
                semantic[self.coco.annToMask(a) > 0] = self.index[a["category_id"]] + 1
            targets["semantic"] = torch.from_numpy(np.array(Image.fromarray(semantic).resize(
                (self.size, self.size), Image.NEAREST))).long()
        return self.transform(image.resize((self.size, self.size), Image.BILINEAR)), targets


def _load_coco(path: Path) -> Any:
    """pycocotools' COCO index of ``path`` (checked by ``read_coco``), with errors that name the file and what is
    wrong as ValueErrors (a Config validator's errors)."""
    from pycocotools.coco import COCO  # loaded with the first COCO file read

    try:
        data = read_coco(path)
    except NascoreError as exc:
        raise ValueError(str(exc)) from None
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class COCODetection(Dataset):
    """A user's detection data in COCO format: per split an annotation JSON and its image folder."""

    name: ClassVar[str] = "coco"

    class Config(ComponentConfig):
        train_json: Path
        train_images: Path
        val_json: Path
        val_images: Path
        image_size: int = Field(256, ge=16, le=2048, description="every image is resized to this square")

        @model_validator(mode="after")
        def _files(self) -> COCODetection.Config:
            cats = {}
            for split in ("train", "val"):
                ann, images = getattr(self, f"{split}_json"), getattr(self, f"{split}_images")
                if not images.is_dir():
                    raise ValueError(f"{split}_images: expected a folder of images, {images} is not one")
                coco = _load_coco(ann)
                absent = [im["file_name"] for im in coco.dataset["images"] if not (images / im["file_name"]).is_file()]
                if absent:
                    raise ValueError(f"{split}_json: {len(absent)} images of {ann} are not in {images}, e.g. "
                                     f"{absent[0]}")
                unknown = {a["category_id"] for a in coco.dataset["annotations"]} - set(coco.cats)
                if unknown:
                    raise ValueError(f"{split}_json: annotations of {ann} use category ids {sorted(unknown)} that "
                                     "its categories do not list")
                cats[split] = sorted(coco.cats)
            if cats["train"] != cats["val"]:
                raise ValueError(f"val_json: categories {cats['val']} differ from train_json's {cats['train']}")
            return self

    def _coco(self, split: str) -> Any:
        """The split's annotations, loaded once per dataset object."""
        loaded = self.__dict__.setdefault("_loaded", {})
        if split not in loaded:
            loaded[split] = _load_coco(getattr(self.config, f"{split}_json"))
        return loaded[split]

    def _categories(self) -> list[int]:
        return sorted(self._coco("train").cats)

    def info(self) -> DataInfo:
        k = len(self._categories())
        classes = {"classes": k}
        if self.split("train").has_masks:
            classes["semantic"] = k + 1
        return DataInfo(3, self.config.image_size, classes, IMAGENET_MEAN, IMAGENET_STD)

    def split(self, name: str) -> COCOSplit:
        c = self.config
        return COCOSplit(self._coco(name), getattr(c, f"{name}_images"), c.image_size, self._categories())

    def collate(self, batch: list[Any]) -> Any:
        return ds.collate(batch)


def _class_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@hookimpl
def nascore_datasets():
    return [COCODetection, DigitScenes, ImageFolder]
