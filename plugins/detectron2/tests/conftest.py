"""Fixtures of nascore-detectron2's tests; tests that need detectron2 skip, with the reason, where it cannot be
imported (it is not on the package index; see the plugin's README)."""
from __future__ import annotations

import pytest


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
