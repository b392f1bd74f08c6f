"""The fusion neck the light dense heads share: every feature level from ``min_reduction`` down projected by a
1x1 conv, upsampled to the finest of them and summed (FPN-style, top-down in one step), then 3x3 conv + BN +
ReLU."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FuseNeck(nn.Module):
    def __init__(self, feature_info: list[dict], min_reduction: int, channels: int, task: str):
        super().__init__()
        self.levels = [i for i, f in enumerate(feature_info) if f["reduction"] >= min_reduction]
        if not self.levels:
            raise ValueError(f"{task} needs a feature level at reduction {min_reduction} or coarser")
        #: reduction of the fused output
        self.stride = feature_info[self.levels[0]]["reduction"]
        self.lateral = nn.ModuleList(nn.Conv2d(feature_info[i]["num_chs"], channels, 1) for i in self.levels)
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[self.levels[0]].shape[-2:]
        y = None
        for lateral, i in zip(self.lateral, self.levels):
            z = lateral(features[i])
            if z.shape[-2:] != size:
                z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
            y = z if y is None else y + z
        return self.fuse(y)
