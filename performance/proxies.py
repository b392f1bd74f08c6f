"""Zero-cost proxies: scores of an untrained network that are meant to rank archs by trained accuracy, the
baselines a performance predictor must beat (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", 2021).

- ``synflow`` (Tanaka et al. 2020): every parameter made positive, an all-ones input in float64, the sum of the
  outputs back-propagated; the score is ``sum |theta * dR/dtheta|`` over convolution and linear weights. BatchNorm
  runs in eval mode with its fresh statistics (an identity), as the proxy assumes no normalisation. Reported as
  its natural log (the sum reaches 1e100 on deep nets).
- ``naswot`` (Mellor et al. 2021, "NAS without training"): for a batch of N real images, each image's binary
  code of which activation inputs are positive (every ReLU-family activation module); the score is
  ``log |det K|`` of ``K = c c^T + (1 - c)(1 - c)^T`` (N x N Hamming-similarity kernel). BatchNorm normalises
  with the batch's statistics (train mode, as the reference scores untrained networks).

The network is the untrained model an arch builds (its backbone); features of every level are summed for synflow.
"""
from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

PROXIES = ("synflow", "naswot")
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.SiLU, nn.GELU, nn.ELU, nn.Mish)


def _tensors(out: Any) -> Iterable[Tensor]:
    """Every tensor in a model's output (a tensor, a list of feature levels, a dict of task outputs)."""
    if isinstance(out, Tensor):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from _tensors(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from _tensors(v)


def synflow(model: nn.Module, input_size: int, in_channels: int = 3) -> float:
    """log of the SynFlow score of ``model`` (a copy is scored; ``model`` is untouched)."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    x = torch.ones(1, in_channels, input_size, input_size, dtype=torch.float64, device=device)
    total = sum(t.sum() for t in _tensors(net(x)))
    total.backward()
    with torch.no_grad():
        value = sum(float((m.weight * m.weight.grad).abs().sum()) for m in net.modules()
                    if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None)
    return math.log(value) if value > 0 else float("-inf")


@torch.no_grad()
def naswot(model: nn.Module, images: Tensor) -> float:
    """log |det K| of the NASWOT activation kernel of ``model`` on ``images`` (N x C x H x W); a copy is scored."""
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(module: nn.Module, args: tuple) -> None:
        codes = (args[0].detach().reshape(n, -1) > 0).double().cpu()
        kernel.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

    net = copy.deepcopy(model).train()  # batch statistics, without touching the model's running ones
    for m in net.modules():
        if isinstance(m, _ACTIVATIONS):
            m.register_forward_pre_hook(hook)
    net(images.to(next(net.parameters()).device))
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


def scale(values: Iterable[float]) -> tuple[float, float]:
    """The mean and standard deviation of the finite ``values`` (1 where they do not vary): what standardises a
    proxy and another score before they are summed into one (``oneshot``'s ``proxy``, ``bench supernet-rank``)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    return statistics.fmean(finite), statistics.pstdev(finite) or 1.0
