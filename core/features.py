"""Backbones speak timm's features language: ``feature_info`` is a list of
``{"num_chs": C, "reduction": R, "module": name}``, one per returned feature level."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn


@dataclass(frozen=True)
class PreLogits:
    """What a classifier puts between a backbone's last feature level and its linear layer.

    ``conv-pool``: 1x1 conv to ``num_features`` + BN + activation, then global pooling (FBNet);
    ``pool-conv``: pooling first, then a 1x1 conv (no BN) + activation, cheap at 1x1 (MobileNetV3, FBNetV2).
    """

    num_features: int
    order: Literal["conv-pool", "pool-conv"] = "conv-pool"
    act: Literal["relu", "hswish"] = "relu"


class Backbone(nn.Module):
    """A standalone built model: ``forward(x)`` returns one feature map per ``feature_info`` level.

    ``pre_logits`` says how a classifier widens the last level before its linear layer (FBNet: a 1x1 conv to
    1984 channels before pooling), or None for a plain pool + linear classifier.
    """

    feature_info: list[dict]
    pre_logits: PreLogits | None = None

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without going more than 10% down (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v
