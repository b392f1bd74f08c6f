"""digit-scenes for detectron2's own data pipeline: exported once as COCO (boxes + instance masks) and
registered with ``register_coco_instances``, like any user's COCO dataset."""
from __future__ import annotations

from pathlib import Path

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

from nascore.tasks.digit_scenes import SPLITS, SceneConfig, export_coco


def register_digit_scenes(prefix: str, root: str | Path, scenes: SceneConfig | None = None,
                          cache_dir: str | Path | None = None) -> dict[str, str]:
    """Export digit-scenes to ``root`` (unless already there) and register ``<prefix>_train`` / ``_val`` /
    ``_test``; returns split -> registered name. Categories are the digits 0-9 (COCO ids 1-10)."""
    root = Path(root)
    if not (root / "annotations" / "instances_test.json").is_file():
        export_coco(scenes or SceneConfig(), root, cache_dir)
    names = {}
    for split in SPLITS:
        name = f"{prefix}_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(root / "annotations" / f"instances_{split}.json"),
                                    str(root / split / "images"))
        names[split] = name
    return names
