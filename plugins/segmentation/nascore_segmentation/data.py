"""``mask-folder``: a user's semantic segmentation data, images and PNG masks of the same names:
``root/<split>/images/<name>.<png|jpg|jpeg>`` and ``root/<split>/masks/<name>.png`` (one class index per
pixel), for the splits train and val."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from pydantic import Field, model_validator
from torchvision import transforms as T

from nascore.component import ComponentConfig
from nascore.dataset import DataInfo, Dataset
from nascore.errors import NascoreError
from nascore.fileio import IMAGE_MAX_BYTES, check_user_file, open_user_image
from nascore.tasks.datasets import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) by name; a missing folder or an image without its mask (or the reverse) is an error."""
    images_dir, masks_dir = split_dir / "images", split_dir / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise ValueError(f"expected a folder {folder}")
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() == ".png"}
    for what, found in (("image", images), ("mask", masks)):
        for path in found.values():  # a FIFO would block the first read forever; a folder is no image
            try:
                check_user_file(path, what, IMAGE_MAX_BYTES)
            except NascoreError as exc:
                raise ValueError(str(exc)) from None
    if not images:
        raise ValueError(f"{images_dir} has no .png/.jpg images")
    no_mask, no_image = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if no_mask:
        raise ValueError(f"{len(no_mask)} images of {images_dir} have no mask in {masks_dir}, e.g. "
                         f"{images[no_mask[0]].name} (expected {no_mask[0]}.png)")
    if no_image:
        raise ValueError(f"{len(no_image)} masks of {masks_dir} have no image in {images_dir}, e.g. "
                         f"{masks[no_image[0]].name}")
    return [(images[k], masks[k]) for k in sorted(images)]


class MaskSplit(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[Path, Path]], size: int, num_classes: int, ignore_index: int | None):
        self.items, self.size, self.num_classes, self.ignore_index = items, size, num_classes, ignore_index
        self.transform = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_path, mask_path = self.items[i]
        try:
            image = open_user_image(image_path, "image").convert("RGB")
            mask = open_user_image(mask_path, "mask")
        except NascoreError as exc:
            raise NascoreError(f"dataset mask-folder: {exc}") from None
        if mask.mode not in ("L", "P", "I;16", "I"):
            raise NascoreError(f"dataset mask-folder: mask {mask_path} is {mask.mode}; expected one class index "
                               "per pixel (a single-channel PNG)")
        if mask.size != image.size:
            raise NascoreError(f"dataset mask-folder: mask {mask_path} is {mask.size[0]}x{mask.size[1]} but image "
                               f"{image_path} is {image.size[0]}x{image.size[1]}")
        labels = np.array(mask.resize((self.size, self.size), Image.NEAREST), dtype=np.int64)
        valid = labels if self.ignore_index is None else labels[labels != self.ignore_index]
        if valid.size and valid.max() >= self.num_classes:
            raise NascoreError(f"dataset mask-folder: mask {mask_path} holds class {int(valid.max())}; expected "
                               f"0..{self.num_classes - 1} (num_classes: {self.num_classes})")
        image = self.transform(image.resize((self.size, self.size), Image.BILINEAR))
        return image, {"semantic": torch.from_numpy(labels)}


class MaskFolder(Dataset):
    """A user's semantic segmentation data: images + PNG masks of the same names per split."""

    name: ClassVar[str] = "mask-folder"

    class Config(ComponentConfig):
        root: Path
        num_classes: int = Field(ge=2, description="classes in the masks: values 0..num_classes-1")
        image_size: int = Field(256, ge=16, le=2048, description="images and masks are resized to this square")
        ignore_index: int | None = Field(None, description="a mask value that marks unlabelled pixels")

        @model_validator(mode="after")
        def _pairs(self) -> MaskFolder.Config:
            for split in ("train", "val"):
                pairs(self.root / split)
            return self

    def info(self) -> DataInfo:
        return DataInfo(3, self.config.image_size, {"semantic": self.config.num_classes}, IMAGENET_MEAN,
                        IMAGENET_STD)

    def split(self, name: str) -> MaskSplit:
        c = self.config
        return MaskSplit(pairs(c.root / name), c.image_size, c.num_classes, c.ignore_index)

    def collate(self, batch: list[Any]) -> Any:
        images = torch.stack([img for img, _ in batch])
        return images, {"semantic": torch.stack([t["semantic"] for _, t in batch])}
