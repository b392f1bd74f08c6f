"""A model trained by nascore with the ``detectron2`` task, as a plain detectron2 checkpoint + config: the
nascore backbone becomes ``backbone.bottom_up`` (``build_nascore_fpn_backbone``), the task's detector keeps
detectron2's own names, so ``DetectionCheckpointer(build_model(cfg)).load(...)`` restores it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nascore import hookimpl
from nascore.arch import Arch
from nascore.fileio import atomic_write_text, load_checkpoint

from .task import Detectron2

if TYPE_CHECKING:
    from nascore import RunView

HEAD = "heads.{task}.model."


def detectron2_state(network_state: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """nascore ``Network`` keys -> the keys of detectron2's meta-architecture over ``NascoreBackbone``."""
    head, out = HEAD.format(task=task), {}
    for key, value in network_state.items():
        if key.startswith("backbone."):
            out["backbone.bottom_up.model." + key[len("backbone."):]] = value
        elif key.startswith(head + "backbone."):  # the FPN: its bottom-up part has no parameters
            out[key[len(head):]] = value
        elif key.startswith(head):
            out[key[len(head):]] = value
    return out


def export_detectron2(model_file: Path, task: Detectron2, out_prefix: Path, num_classes: int,
                      pixel_mean: list[float] | None = None, pixel_std: list[float] | None = None
                      ) -> tuple[Path, Path]:
    """Write ``<prefix>.pth`` (detectron2 checkpoint), ``<prefix>.yaml`` (its config) and ``<prefix>_arch.json``
    (the arch the config's ``MODEL.NASCORE.ARCH`` points at) from a nascore ``*_model.pt``. ``pixel_mean`` /
    ``pixel_std`` (0-255 RGB) are the normalisation the model was trained with, for detectron2's input."""
    saved = load_checkpoint(model_file)
    arch = Arch.model_validate(saved["arch"])
    arch_file = out_prefix.with_name(out_prefix.name + "_arch.json")
    arch.save(arch_file)
    cfg = task.detectron2_config([], None, num_classes)
    cfg.MODEL.BACKBONE.NAME = "build_nascore_fpn_backbone"
    cfg.MODEL.NASCORE.ARCH = str(arch_file.resolve())
    cfg.MODEL.NASCORE.OUT_FEATURES = list(cfg.MODEL.FPN.IN_FEATURES)
    cfg.INPUT.FORMAT = "RGB"
    if pixel_mean is not None:
        cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(pixel_mean), list(pixel_std)
    weights = out_prefix.with_suffix(".pth")
    tmp = weights.with_name(weights.name + ".tmp")
    torch.save({"model": detectron2_state(saved["network"], task.name)}, tmp)
    tmp.replace(weights)
    config = out_prefix.with_suffix(".yaml")
    atomic_write_text(config, cfg.dump())
    return weights, config


@hookimpl
def nascore_run_end(run: RunView, summary: dict[str, Any]) -> None:
    """After a run that trained a model with the ``detectron2`` task (alone), export it for detectron2."""
    if len(run.parts.tasks) != 1 or not isinstance(run.parts.tasks[0], Detectron2):
        return
    task, info = run.parts.tasks[0], run.parts.info
    num_classes = task.num_classes(info)
    mean = std = None
    if info.mean is not None:  # detectron2 normalises 0-255 images itself
        mean, std = [255 * m for m in info.mean], [255 * s for s in info.std]
    for model_file in sorted(Path(run.out_dir).glob("*_model.pt")):
        export_detectron2(model_file, task, model_file.with_name(model_file.stem + "_detectron2"), num_classes,
                          mean, std)
