"""Saliency estimation (BMTAS's ``sal``): foreground vs background per pixel; balanced BCE with the batch's share
of negatives as the positives' weight; max F-measure (beta^2 = 0.3) over thresholds, precision and recall
aggregated over every pixel of the split (torchmetrics' binned precision-recall curve)."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from nascore.component import ComponentConfig
from nascore.hookspecs import hookimpl

from .binary import BinaryDenseTask, thresholds


class Saliency(BinaryDenseTask):
    name: ClassVar[str] = "saliency"
    target: ClassVar[str] = "saliency"
    primary_metric: ClassVar[str] = "max_f"

    class Config(ComponentConfig):
        channels: int = Field(128, ge=4, description="width of the DeepLabv3+ head")
        loss_weight: float = Field(5.0, gt=0, description="fixed weight of this task's loss (BMTAS: 5)")
        beta2: float = Field(0.3, gt=0, description="beta^2 of the F-measure (0.3: precision weighs more)")
        thresholds: int = Field(99, ge=1, description="evenly spaced thresholds in (0, 1) the max is taken over")

    def metrics(self, device: torch.device):
        # torchmetrics (which loads torchvision): only when evaluating
        from torchmetrics.classification import BinaryPrecisionRecallCurve

        return BinaryPrecisionRecallCurve(thresholds=thresholds(self.config.thresholds, device)).to(device)

    def compute_metrics(self, metrics: Any) -> dict[str, float]:
        precision, recall, _ = metrics.compute()
        precision, recall = precision[:-1], recall[:-1]  # the curve's appended (1, 0) end point is no threshold
        precision = precision.nan_to_num(0.0)  # no positive prediction at a threshold: torchmetrics gives NaN
        b2 = self.config.beta2
        f = (1 + b2) * precision * recall / (b2 * precision + recall).clamp_min(1e-12)
        return {"max_f": float(f.max())}


@hookimpl
def nascore_tasks():
    return [Saliency]
