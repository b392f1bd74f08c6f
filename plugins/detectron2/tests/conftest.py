"""Shared fixtures of nascore-detectron2's tests. Tests that need detectron2 skip, with the reason, where
it cannot be imported (it is not on the package index; see the plugin's README)."""
from __future__ import annotations

import importlib.util

import pytest

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
needs_detectron2 = pytest.mark.skipif(not HAS_DETECTRON2, reason="detectron2 is not installed (it is installed "
                                                                 "from source, see plugins/detectron2/README.md)")


@pytest.fixture(scope="session")
def scenes():
    from nascore.tasks.digit_scenes import SceneConfig

    return SceneConfig(image_size=64, num_train=64, num_val=24, num_test=8)


@pytest.fixture(scope="session")
def digit_scenes_d2(tmp_path_factory, scenes):
    """digit-scenes exported as COCO and registered with detectron2: split -> dataset name."""
    from nascore_detectron2.data import register_digit_scenes

    root = tmp_path_factory.mktemp("d2data")
    return register_digit_scenes("nascore_test_digits", root / "coco", scenes, root / "cache")


def small_config(model: str = "faster_rcnn", arch: str = "fbnet_c", names: dict | None = None):
    """A CPU-sized detectron2 config for 64 px digit-scenes."""
    from nascore.tasks.digit_scenes import MEAN, STD
    from nascore_detectron2 import detection_config

    cfg = detection_config(model, 10, arch=arch, fpn_channels=32, anchor_scale=4.0, proposals=64,
                           box_head_dim=128, mask_head_dim=32)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [255 * m for m in MEAN], [255 * s for s in STD]
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 64
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 64
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SEED = 0
    if names:
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (names["train"],), (names["val"],)
    return cfg
