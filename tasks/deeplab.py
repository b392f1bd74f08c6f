"""A DeepLabv3+-style dense head as BMTAS uses it (Bruggemann et al. 2020, after Chen et al. 2018): R-ASPP on the
last feature level (a 1x1 conv branch + an image-pooling branch, projected by a 1x1 conv), then the v3+ decoder:
the stride-4 level reduced to 48 channels, concatenated with the upsampled ASPP output, two depth-wise separable
3x3 convs, a 1x1 classifier, bilinear upsampling to the input. ReLU6 throughout, as the reference.

Written here rather than taken from a library: torchvision's ``DeepLabHead`` is v3 (no low-level decoder) and
segmentation-models-pytorch's decoder is only an optional plugin's dependency.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu6(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6(inplace=True))


def separable(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu6(cin, cin, 3, groups=cin), conv_bn_relu6(cin, cout))


class RASPP(nn.Module):
    """Reduced ASPP (MobileNetV2's): 1x1 conv + image pooling, concatenated and projected."""

    def __init__(self, cin: int, channels: int, dropout: float = 0.1):
        super().__init__()
        self.conv = conv_bn_relu6(cin, channels)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu6(cin, channels))
        self.dropout = nn.Dropout(dropout)
        self.project = conv_bn_relu6(2 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])  # upsampling a 1x1 map = repeating it
        return self.project(self.dropout(torch.cat([self.conv(x), pooled], 1)))


class DeepLabV3PlusHead(nn.Module):
    def __init__(self, feature_info: list[dict], num_outputs: int, channels: int = 128, low_channels: int = 48):
        super().__init__()
        # the decoder's low-level input: the stride-4 level, or the finest coarser one a backbone has
        low = [i for i, f in enumerate(feature_info) if f["reduction"] >= 4]
        if not low:
            raise ValueError("a DeepLabv3+ head needs a feature level at reduction 4 or coarser")
        self.low = low[0]
        self.reduction = feature_info[self.low]["reduction"]
        self.aspp = RASPP(feature_info[-1]["num_chs"], channels)
        self.reduce = conv_bn_relu6(feature_info[self.low]["num_chs"], low_channels)
        self.decode = nn.Sequential(separable(channels + low_channels, channels), separable(channels, channels))
        self.logits = nn.Conv2d(channels, num_outputs, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        low = features[self.low]
        x = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.logits(self.decode(torch.cat([self.reduce(low), x], 1)))
        size = tuple(s * self.reduction for s in low.shape[-2:])
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
