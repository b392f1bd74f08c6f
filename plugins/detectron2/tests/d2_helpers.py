"""Helpers of nascore-detectron2's tests (a module of its own: test folders share the name ``conftest``)."""
from __future__ import annotations

import importlib.util

import pytest


def _missing() -> str | None:
    if importlib.util.find_spec("detectron2") is None:
        return "detectron2 is not installed (it is installed from source, see plugins/detectron2/README.md)"
    if importlib.util.find_spec("nascore_detectron2") is None:
        return "nascore-detectron2 is not installed (pip install --no-build-isolation -e plugins/detectron2)"
    return None


HAS_DETECTRON2 = _missing() is None
needs_detectron2 = pytest.mark.skipif(not HAS_DETECTRON2, reason=_missing() or "")


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
