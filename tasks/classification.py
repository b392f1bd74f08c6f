"""Image classification: a head over the backbone's last feature level, cross-entropy, top-1 accuracy."""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from nascore.component import ComponentConfig
from nascore.dataset import DataInfo
from nascore.features import PreLogits
from nascore.hookspecs import hookimpl
from nascore.task import Task


class ClassifierHead(nn.Module):
    """[pre-logits: 1x1 conv + BN + act then pool, or pool then 1x1 conv + act] -> dropout -> linear."""

    def __init__(self, in_chs: int, num_classes: int, pre_logits: PreLogits | None = None, dropout: float = 0.0):
        super().__init__()
        self.pool_first = pre_logits is not None and pre_logits.order == "pool-conv"
        if pre_logits is None:
            self.conv_head = nn.Identity()
        else:
            act = nn.ReLU(inplace=True) if pre_logits.act == "relu" else nn.Hardswish(inplace=True)
            conv = nn.Conv2d(in_chs, pre_logits.num_features, 1, bias=False)
            self.conv_head = nn.Sequential(conv, act) if self.pool_first else \
                nn.Sequential(conv, nn.BatchNorm2d(pre_logits.num_features), act)
            in_chs = pre_logits.num_features
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_chs, num_classes)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        if self.pool_first:
            x = self.conv_head(x.mean((2, 3), keepdim=True)).flatten(1)
        else:
            x = self.conv_head(x).mean((2, 3))
        return self.fc(self.dropout(x))


class Classification(Task):
    name: ClassVar[str] = "classification"
    target: ClassVar[str] = "label"
    primary_metric: ClassVar[str] = "top1"

    class Config(ComponentConfig):
        #: defaults to the dataset's number of classes
        num_classes: int | None = Field(None, ge=2)
        dropout: float = Field(0.0, ge=0, lt=1)
        label_smoothing: float = Field(0.0, ge=0, lt=1)

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
