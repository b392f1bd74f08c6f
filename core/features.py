"""Backbones speak timm's features language: ``feature_info`` is a list of
``{"num_chs": C, "reduction": R, "module": name}``, one per returned feature level."""
from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """A standalone built model: ``forward(x)`` returns one feature map per ``feature_info`` level.

    ``num_features`` is the width a classifier projects the last level to before pooling (FBNet's
    1x1 conv to 1984 channels), or None for a plain pool + linear classifier.
    """

    feature_info: list[dict]
    num_features: int | None = None

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without going more than 10% down (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v
