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
    act: Literal["relu", "relu6", "hswish"] = "relu"


@dataclass(frozen=True)
class Chain:
    """A backbone seen as a sequence (what branching needs): ``stem``, then ``layers`` in order, each taking the
    previous one's output; feature level ``i`` of ``feature_info`` is the output of layer ``taps[i]``."""

    stem: nn.Module
    layers: list[tuple[str, nn.Module]]  # (name, module), e.g. ("layer01", block)
    taps: list[int]


class Backbone(nn.Module):
    """A standalone built model: ``forward(x)`` returns one feature map per ``feature_info`` level.

    ``pre_logits`` says how a classifier widens the last level before its linear layer (FBNet: a 1x1 conv to
    1984 channels before pooling), or None for a plain pool + linear classifier.

    A module defining a built model's ``forward`` has no ``from __future__ import annotations``: torch.fx copies
    the forward's annotations into the code it generates, and a postponed ``"Tensor"`` there is a type name that
    torch.jit.script of the traced model refuses (timm's fx + TorchScript test; tests/test_export.py).
    """

    feature_info: list[dict]
    pre_logits: PreLogits | None = None
    __jit_ignored_attributes__ = ("feature_info", "pre_logits")  # descriptions, not state: TorchScript skips them

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def chain(self) -> Chain:
        """This model as stem + layers + taps, sharing its modules; backbones that are not one sequence of
        layers (multi-path ones) raise NotImplementedError saying so."""
        raise NotImplementedError(f"{type(self).__name__} is not a single sequence of layers")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without going more than 10% down (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ClassifierHead(nn.Module):
    """[pre-logits: 1x1 conv + BN + act then pool, or pool then 1x1 conv + act] -> dropout -> linear."""

    def __init__(self, in_chs: int, num_classes: int, pre_logits: PreLogits | None = None, dropout: float = 0.0):
        super().__init__()
        self.pool_first = pre_logits is not None and pre_logits.order == "pool-conv"
        if pre_logits is None:
            self.conv_head = nn.Identity()
        else:
            act = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}[pre_logits.act](inplace=True)
            conv = nn.Conv2d(in_chs, pre_logits.num_features, 1, bias=False)
            self.conv_head = nn.Sequential(conv, act) if self.pool_first else \
                nn.Sequential(conv, nn.BatchNorm2d(pre_logits.num_features), act)
            in_chs = pre_logits.num_features
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_chs, num_classes)

    def pool(self, x: Tensor) -> Tensor:
        """The last feature map -> the pre-logit vector (N, C)."""
        if self.pool_first:
            return self.conv_head(x.mean((2, 3), keepdim=True)).flatten(1)
        return self.conv_head(x).mean((2, 3))

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.fc(self.dropout(self.pool(features[-1])))
