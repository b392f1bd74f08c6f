"""The edges task's metric: an ODS-style F-measure (one threshold for the whole split). Its own module: torchmetrics
(and with it torchvision) is imported only when a run evaluates, not when a spec is validated."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from .binary import thresholds

#: BSDS / SEISM's default matching distance, as a fraction of the image diagonal
MAX_DIST = 0.0075


class ODSFMeasure(Metric):
    """F-measure (beta = 1) at the best single threshold over the dataset. A predicted edge pixel is correct when
    a ground-truth edge pixel lies within ``tolerance`` pixels (Chebyshev distance), a ground-truth pixel is
    recalled when a predicted one does; counts are summed over the dataset per threshold. This approximates
    SEISM's evaluation, which matches pixels one-to-one (a bipartite assignment) within the same distance."""

    full_state_update = False

    def __init__(self, num_thresholds: int, tolerance: int | None = None):
        super().__init__()
        self.tolerance = tolerance
        self.register_buffer("thresholds", thresholds(num_thresholds))
        for name in ("correct", "predicted", "recalled"):
            self.add_state(name, torch.zeros(num_thresholds, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("edges", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _dilate(self, x: Tensor, r: int) -> Tensor:
        return x if r == 0 else F.max_pool2d(x.float(), 2 * r + 1, stride=1, padding=r) > 0

    def update(self, probs: Tensor, target: Tensor) -> None:
        h, w = probs.shape[-2:]
        r = round(MAX_DIST * (h * h + w * w) ** 0.5) if self.tolerance is None else self.tolerance
        gt = target.bool().unsqueeze(1)  # [N, 1, H, W]
        near_gt = self._dilate(gt, r)
        for i, t in enumerate(self.thresholds):
            pred = (probs >= t).unsqueeze(1)
            self.correct[i] += (pred & near_gt).sum()
            self.predicted[i] += pred.sum()
            self.recalled[i] += (gt & self._dilate(pred, r)).sum()
        self.edges += gt.sum()

    def compute(self) -> Tensor:
        precision = self.correct / self.predicted.clamp_min(1)
        recall = self.recalled / self.edges.clamp_min(1)
        return (2 * precision * recall / (precision + recall).clamp_min(1e-12)).max()
