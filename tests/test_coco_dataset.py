"""The ``coco`` dataset (users' COCO-format detection data) read back from digit-scenes' own COCO export:
the same boxes, classes and semantic maps as the generated split."""
from __future__ import annotations

import pytest
import torch

from nascore.tasks.datasets import COCODetection
from nascore.tasks.digit_scenes import SceneConfig, SceneSplit, export_coco

CFG = SceneConfig(image_size=64, num_train=12, num_val=6, num_test=4, seed=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    export_coco(CFG, root / "export", cache_dir=root / "cache")
    return root


def dataset(root, size: int = 64) -> COCODetection:
    e = root / "export"
    return COCODetection({"train_json": e / "annotations" / "instances_train.json",
                          "train_images": e / "train" / "images",
                          "val_json": e / "annotations" / "instances_val.json",
                          "val_images": e / "val" / "images", "image_size": size})


def test_targets_match_the_generated_split(exported):
    data = dataset(exported)
    info = data.info()
    assert info.num_classes == {"classes": 10, "semantic": 11} and info.image_size == 64
    split, original = data.split("val"), SceneSplit(CFG, "val", cache_dir=exported / "cache")
    assert len(split) == len(original) == CFG.num_val
    for i in range(len(split)):
        image, targets = split[i]
        _, expected = original[i]
        assert image.shape == (3, 64, 64)
        torch.testing.assert_close(targets["boxes"], expected["boxes"])
        assert targets["classes"].tolist() == expected["classes"].tolist()
        assert torch.equal(targets["semantic"], expected["semantic"])  # painted back from the instance masks


def test_resizing_scales_the_boxes(exported):
    _, small = dataset(exported, 32).split("train")[0]
    _, full = dataset(exported, 64).split("train")[0]
    torch.testing.assert_close(small["boxes"] * 2, full["boxes"])
    assert small["semantic"].shape == (32, 32)


def test_batches_collate_with_ragged_boxes(exported):
    data = dataset(exported)
    split = data.split("train")
    images, targets = data.collate([split[0], split[1], split[2]])
    assert images.shape == (3, 3, 64, 64) and len(targets["boxes"]) == 3 and targets["semantic"].shape == (3, 64, 64)
