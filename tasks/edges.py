"""Edge detection (BMTAS's ``edge``): object boundaries per pixel; balanced BCE with a fixed positive weight
(0.95); an ODS-style F-measure (one threshold for the whole split)."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from nascore.component import ComponentConfig
from nascore.hookspecs import hookimpl

from .binary import BinaryDenseTask


class Edges(BinaryDenseTask):
    name: ClassVar[str] = "edges"
    target: ClassVar[str] = "edges"
    primary_metric: ClassVar[str] = "ods_f"

    class Config(ComponentConfig):
        channels: int = Field(128, ge=4, description="width of the DeepLabv3+ head")
        loss_weight: float = Field(50.0, gt=0, description="fixed weight of this task's loss (BMTAS: 50)")
        positive_weight: float = Field(0.95, gt=0, lt=1, description="balanced BCE: weight of edge pixels "
                                                                      "(non-edges get 1 minus it)")
        thresholds: int = Field(99, ge=1, description="evenly spaced thresholds in (0, 1) the best is chosen from")
        tolerance: int | None = Field(None, ge=0, description="matching distance in pixels; default "
                                                              "round(0.0075 x image diagonal), BSDS's maxDist")

    def positive_weight(self) -> float:
        return self.config.positive_weight

    def metrics(self, device: torch.device) -> Any:
        from .edge_metric import ODSFMeasure  # torchmetrics (which loads torchvision): when metrics are computed

        return ODSFMeasure(self.config.thresholds, self.config.tolerance).to(device)

    def compute_metrics(self, metrics: Any) -> dict[str, float]:
        return {"ods_f": float(metrics.compute())}


@hookimpl
def nascore_tasks():
    return [Edges]
