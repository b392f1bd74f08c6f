"""Image classification: a head over the backbone's last feature level, cross-entropy, top-1 accuracy."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from nascore.component import ComponentConfig
from nascore.dataset import DataInfo
from nascore.features import ClassifierHead, PreLogits
from nascore.hookspecs import hookimpl
from nascore.task import Task


class Classification(Task):
    name: ClassVar[str] = "classification"
    target: ClassVar[str] = "label"
    primary_metric: ClassVar[str] = "top1"

    class Config(ComponentConfig):
        #: defaults to the dataset's number of classes
        num_classes: int | None = Field(None, ge=2)
        dropout: float = Field(0.0, ge=0, lt=1)
        label_smoothing: float = Field(0.0, ge=0, lt=1)

    def configured_classes(self) -> int | None:
        return self.config.num_classes

    def build_head(self, feature_info: list[dict], pre_logits: PreLogits | None, data: DataInfo | None
                   ) -> nn.Module:
        self._num_classes = self.num_classes(data)
        return ClassifierHead(feature_info[-1]["num_chs"], self._num_classes, pre_logits, self.config.dropout)

    def loss(self, output: Tensor, targets: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(output, targets[self.target], label_smoothing=self.config.label_smoothing)

    def metrics(self, device: torch.device):
        from torchmetrics.classification import MulticlassAccuracy  # slow import, only when evaluating

        return MulticlassAccuracy(num_classes=self._num_classes, average="micro").to(device)


@hookimpl
def nascore_tasks():
    return [Classification]
