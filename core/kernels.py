"""Smaller kernels as views of a larger one: how a weight-sharing supernet's kernel options share weights (FBNet's
``shared_weights``, FBNetV2's shared block types)."""
from __future__ import annotations

from torch import Tensor


def centre(weight: Tensor, kernel: int) -> Tensor:
    """The centre ``kernel`` x ``kernel`` of a convolution weight of a larger (or the same) kernel (BigNAS' centre
    crop: a small kernel shares a large one's weights)."""
    trim = (weight.shape[-1] - kernel) // 2
    return weight[..., trim:-trim, trim:-trim] if trim else weight
