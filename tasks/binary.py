"""What the binary dense tasks (saliency, edges) share: BMTAS's DeepLabv3+-style head with one output channel,
a balanced binary cross-entropy, a fixed task weight."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nascore.dataset import DataInfo
from nascore.features import PreLogits
from nascore.task import Task

from .deeplab import DeepLabV3PlusHead
from .segmentation import at_mask_size


def balanced_bce(logits: Tensor, labels: Tensor, weight: float | None = None) -> Tensor:
    """Mean over pixels of ``w * y * -log(s) + (1 - w) * (1 - y) * -log(1 - s)``, ``s = sigmoid(logits)``: positives
    weighted ``w``, negatives ``1 - w``; ``w`` is the share of negative pixels when None (HED-style), else
    fixed. Equal to the BMTAS reference's ``BalancedBinaryCrossEntropyLoss`` (BCE with ``pos_weight = w / (1 - w)``,
    divided by ``1 / (1 - w)``), and defined when a batch has no positives."""
    w = (1.0 - labels).mean() if weight is None else torch.tensor(weight, device=logits.device)
    return (w * labels * F.softplus(-logits) + (1 - w) * (1 - labels) * F.softplus(logits)).mean()


class BinaryDenseTask(Task):
    """A per-pixel binary task; subclasses set ``name``, ``target``, ``primary_metric``, ``Config`` (with
    ``channels`` and ``loss_weight``) and the metric."""

    higher_is_better: ClassVar[bool] = True

    def build_head(self, feature_info: list[dict], pre_logits: PreLogits | None, data: DataInfo | None
                   ) -> nn.Module:
        return DeepLabV3PlusHead(feature_info, 1, self.config.channels)

    def positive_weight(self) -> float | None:
        """The balanced BCE's positive weight; None = the batch's share of negatives."""
        return None

    def loss(self, output: Tensor, targets: dict[str, Any]) -> Tensor:
        labels = targets[self.target].float()
        logits = at_mask_size(output, labels).squeeze(1)
        return self.config.loss_weight * balanced_bce(logits, labels, self.positive_weight())

    def update_metrics(self, metrics: Any, output: Tensor, targets: dict[str, Any]) -> None:
        labels = targets[self.target]
        metrics.update(torch.sigmoid(at_mask_size(output, labels).squeeze(1)), labels.int())


def thresholds(n: int, device: torch.device | str = "cpu") -> Tensor:
    """``n`` evenly spaced thresholds strictly inside (0, 1)."""
    return torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1)
