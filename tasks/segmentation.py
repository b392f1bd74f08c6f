"""Semantic segmentation: a light FPN-style head (the feature levels from stride 4 down fused at stride 4 by
``FuseNeck``, a 1x1 classifier per pixel) or BMTAS's DeepLabv3+-style head, logits upsampled to the input;
cross-entropy; mean IoU (torchmetrics' Jaccard index)."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from nascore.component import ComponentConfig
from nascore.dataset import DataInfo
from nascore.features import PreLogits
from nascore.hookspecs import hookimpl
from nascore.task import Task

from .deeplab import DeepLabV3PlusHead
from .neck import FuseNeck


class SegmentationHead(nn.Module):
    def __init__(self, feature_info: list[dict], num_classes: int, channels: int):
        super().__init__()
        self.neck = FuseNeck(feature_info, 4, channels, "segmentation")
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        logits = self.classifier(self.neck(features))
        size = tuple(s * self.neck.stride for s in logits.shape[-2:])
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def at_mask_size(logits: Tensor, mask: Tensor) -> Tensor:
    """Logits resized (bilinear) to the mask's height and width where they differ."""
    if logits.shape[-2:] == mask.shape[-2:]:
        return logits
    return F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)


class Segmentation(Task):
    name: ClassVar[str] = "segmentation"
    target: ClassVar[str] = "semantic"
    primary_metric: ClassVar[str] = "miou"

    class Config(ComponentConfig):
        #: defaults to the dataset's number of classes
        num_classes: int | None = Field(None, ge=2)
        channels: int = Field(64, ge=4, description="width of the fused stride-4 features")
        head: Literal["fpn", "deeplabv3plus"] = Field("fpn", description="light FPN-style fusion or BMTAS's "
                                                                          "DeepLabv3+-style head")
        loss_weight: float = Field(1.0, gt=0, description="fixed weight of this task's loss (BMTAS: 1)")

    def configured_classes(self) -> int | None:
        return self.config.num_classes

    def build_head(self, feature_info: list[dict], pre_logits: PreLogits | None, data: DataInfo | None
                   ) -> nn.Module:
        self._num_classes = self.num_classes(data)
        if self.config.head == "deeplabv3plus":
            return DeepLabV3PlusHead(feature_info, self._num_classes, self.config.channels)
        return SegmentationHead(feature_info, self._num_classes, self.config.channels)

    def loss(self, output: Tensor, targets: dict[str, Tensor]) -> Tensor:
        mask = targets[self.target]
        return self.config.loss_weight * self.criterion(at_mask_size(output, mask), mask)

    def criterion(self, logits: Tensor, mask: Tensor) -> Tensor:
        """The loss of logits at the mask's size (subclasses choose another)."""
        return F.cross_entropy(logits, mask)

    def metrics(self, device: torch.device):
        from torchmetrics.classification import MulticlassJaccardIndex  # slow import, only when evaluating

        return MulticlassJaccardIndex(num_classes=self._num_classes, average="macro").to(device)

    def update_metrics(self, metrics, output: Tensor, targets: dict[str, Tensor]) -> None:
        mask = targets[self.target]
        metrics.update(at_mask_size(output, mask).argmax(1), mask)


@hookimpl
def nascore_tasks():
    return [Segmentation]
