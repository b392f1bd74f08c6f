"""Object detection as a light search-time task: a CenterNet-style anchor-free head (Zhou et al., 2019) on the
stride-8 features (the levels from stride 8 down, fused as in the segmentation head): a class heatmap trained
with the penalty-reduced focal loss on Gaussian peaks at box centres, and box size and centre offset regressed
with L1 at the centres; decoded by 3x3 max-pool peak picking; scored with torchmetrics'
``MeanAveragePrecision`` (COCO mAP, pycocotools backend)."""
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

from .neck import FuseNeck


class CenterNetHead(nn.Module):
    """Returns ``(heatmap logits [N, C, h, w], size [N, 2, h, w], offset [N, 2, h, w])`` at ``stride``."""

    def __init__(self, feature_info: list[dict], num_classes: int, channels: int):
        super().__init__()
        self.neck = FuseNeck(feature_info, 8, channels, "detection")
        self.stride = self.neck.stride
        self.heatmap = nn.Conv2d(channels, num_classes, 1)
        self.size = nn.Conv2d(channels, 2, 1)
        self.offset = nn.Conv2d(channels, 2, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # CenterNet's prior: sigmoid = 0.1

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        y = self.neck(features)
        return self.heatmap(y), self.size(y), self.offset(y)


def gaussian_radius(w: float, h: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest corner shift that keeps IoU >= ``min_overlap`` (its three cases)."""
    r1 = (h + w - ((h + w) ** 2 - 4 * w * h * (1 - min_overlap) / (1 + min_overlap)) ** 0.5) / 2
    r2 = (2 * (h + w) - (4 * (h + w) ** 2 - 16 * (1 - min_overlap) * w * h) ** 0.5) / 4
    a3 = 4 * min_overlap
    r3 = (-2 * min_overlap * (h + w) + ((2 * min_overlap * (h + w)) ** 2
                                        - 4 * a3 * (min_overlap - 1) * w * h) ** 0.5) / (2 * a3)
    return max(0.0, min(r1, r2, r3))


def encode(boxes: list[Tensor], classes: list[Tensor], num_classes: int, shape: tuple[int, int], stride: int
           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Targets at ``shape`` (h, w): heatmap [N,C,h,w], size and offset [N,2,h,w] (sizes in output cells), and
    the mask of centre cells [N,h,w]."""
    n, (h, w) = len(boxes), shape
    device = boxes[0].device if n else torch.device("cpu")
    heat = torch.zeros(n, num_classes, h, w, device=device)
    size = torch.zeros(n, 2, h, w, device=device)
    offset = torch.zeros(n, 2, h, w, device=device)
    mask = torch.zeros(n, h, w, dtype=torch.bool, device=device)
    ys, xs = torch.arange(h, device=device).view(-1, 1), torch.arange(w, device=device).view(1, -1)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        for (x1, y1, x2, y2), k in zip((b / stride).tolist(), c.tolist()):
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            sigma = (2 * max(0, int(gaussian_radius(x2 - x1, y2 - y1))) + 1) / 6
            peak = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2))
            heat[i, k] = torch.maximum(heat[i, k], peak)
            size[i, :, iy, ix] = torch.tensor([x2 - x1, y2 - y1], device=device)
            offset[i, :, iy, ix] = torch.tensor([cx - ix, cy - iy], device=device)
            mask[i, iy, ix] = True
    return heat, size, offset, mask


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), normalised by the object count."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1)


@torch.no_grad()
def decode(output: tuple[Tensor, Tensor, Tensor], stride: int, top_k: int = 20) -> list[dict[str, Tensor]]:
    """Peaks of the heatmap (3x3 max-pool), their sizes and offsets, as xyxy boxes in input pixels."""
    heat_logits, size, offset = output
    heat = torch.sigmoid(heat_logits)
    heat = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
    n, c, h, w = heat.shape
    scores, index = heat.view(n, -1).topk(min(top_k, c * h * w))
    labels, cell = index // (h * w), index % (h * w)
    iy, ix = cell // w, cell % w
    results = []
    for i in range(n):
        sw, sh = size[i, 0].flatten()[cell[i]], size[i, 1].flatten()[cell[i]]
        ox, oy = offset[i, 0].flatten()[cell[i]], offset[i, 1].flatten()[cell[i]]
        cx, cy = ix[i] + ox, iy[i] + oy
        boxes = torch.stack([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2], 1) * stride
        results.append({"boxes": boxes, "scores": scores[i], "labels": labels[i]})
    return results


class Detection(Task):
    name: ClassVar[str] = "detection"
    target: ClassVar[str] = "classes"  # with "boxes" beside it
    primary_metric: ClassVar[str] = "map"

    class Config(ComponentConfig):
        num_classes: int | None = Field(None, ge=1, description="defaults to the dataset's (its `classes`)")
        channels: int = Field(64, ge=4)
        top_k: int = Field(20, ge=1, description="detections kept per image")

    def configured_classes(self) -> int | None:
        return self.config.num_classes

    def build_head(self, feature_info: list[dict], pre_logits: PreLogits | None, data: DataInfo | None
                   ) -> nn.Module:
        self._num_classes = self.num_classes(data)
        self._head = CenterNetHead(feature_info, self._num_classes, self.config.channels)
        return self._head

    def loss(self, output: tuple[Tensor, Tensor, Tensor], targets: dict) -> Tensor:
        heat_logits, size, offset = output
        heat, size_t, offset_t, mask = encode(targets["boxes"], targets["classes"], self._num_classes,
                                              tuple(heat_logits.shape[-2:]), self._head.stride)
        m = mask.unsqueeze(1).float()
        count = m.sum().clamp_min(1)
        return (focal_loss(heat_logits, heat) + 0.1 * (F.l1_loss(size * m, size_t * m, reduction="sum") / count)
                + F.l1_loss(offset * m, offset_t * m, reduction="sum") / count)

    def metrics(self, device: torch.device):
        from torchmetrics.detection import MeanAveragePrecision  # slow import, only when evaluating

        return MeanAveragePrecision(box_format="xyxy", backend="pycocotools").to(device)

    def update_metrics(self, metrics, output, targets: dict) -> None:
        preds = decode(output, self._head.stride, self.config.top_k)
        metrics.update(preds, [{"boxes": b, "labels": c} for b, c in zip(targets["boxes"], targets["classes"])])

    def compute_metrics(self, metrics) -> dict[str, float]:
        out = metrics.compute()
        return {"map": float(out["map"]), "map_50": float(out["map_50"])}


@hookimpl
def nascore_tasks():
    return [Detection]
