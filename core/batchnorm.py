"""BatchNorm over the first channels of a BatchNorm2d: what a weight-sharing supernet's narrower paths compute
(FBNet's ``shared_weights``, FBNetV2's channel masks), synchronised across torchrun ranks where the module was made
a SyncBatchNorm (``distributed.sync_batchnorm``).

``nn.SyncBatchNorm`` synchronises only when it is called as a module, on its full width; a supernet that slices its
parameters calls ``F.batch_norm`` itself, so the global batch statistics of a converted module are computed here
(:func:`global_batch_norm`): two differentiable all-reduces (``torch.distributed.nn``), the sums, then the
squared deviations from the global mean, over the module's process group.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed import nn as dist_nn


def sliced_batch_norm(bn: nn.BatchNorm2d, y: Tensor, weight: Tensor | None = None,
                      bias: Tensor | None = None) -> Tensor:
    """``bn`` on ``y``'s ``y.shape[1]`` channels, its first ones, as ``bn`` computes (momentum None: the cumulative
    average BatchNorm recalibration uses), with ``weight`` and ``bias`` (default: ``bn``'s first ones); running
    statistics are updated in place through the slices. A SyncBatchNorm in training under torchrun uses the
    statistics of the global batch."""
    width, momentum = y.shape[1], 0.0
    if bn.training:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    weight = bn.weight[:width] if weight is None else weight
    bias = bn.bias[:width] if bias is None else bias
    if bn.training and isinstance(bn, nn.SyncBatchNorm) and _world(bn) > 1:
        return global_batch_norm(bn, y, weight, bias, momentum)
    return F.batch_norm(y, bn.running_mean[:width], bn.running_var[:width], weight, bias, bn.training, momentum,
                        bn.eps)


def _world(bn: nn.SyncBatchNorm) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(bn.process_group or dist.group.WORLD)


def global_batch_norm(bn: nn.SyncBatchNorm, y: Tensor, weight: Tensor, bias: Tensor, momentum: float) -> Tensor:
    """Training-mode BatchNorm of ``y`` with the mean and variance of every rank's batch, gradients flowing to
    every rank (float32 statistics); ``bn``'s first running statistics updated as ``F.batch_norm`` updates them."""
    width, group = y.shape[1], bn.process_group or dist.group.WORLD
    x = y.float()
    count = torch.tensor([x.numel() // width], dtype=x.dtype, device=x.device)
    total = dist_nn.all_reduce(torch.cat([x.sum((0, 2, 3)), count]), group=group)
    n = total[width]
    mean = total[:width] / n
    centred = x - mean[None, :, None, None]
    var = dist_nn.all_reduce(centred.square().sum((0, 2, 3)), group=group) / n
    with torch.no_grad():
        bn.running_mean[:width].mul_(1 - momentum).add_(mean, alpha=momentum)
        bn.running_var[:width].mul_(1 - momentum).add_(var * (n / (n - 1)), alpha=momentum)
    scale = weight.float() * torch.rsqrt(var + bn.eps)
    return (centred * scale[None, :, None, None] + bias.float()[None, :, None, None]).to(y.dtype)
