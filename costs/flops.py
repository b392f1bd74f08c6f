"""FLOPs/params cost model: counts with ``torch.utils.flop_counter.FlopCounterMode``, no hand formulas."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nascore.component import ComponentConfig
from nascore.cost import CostModel
from nascore.hookspecs import hookimpl


def count_macs(module: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-adds of one forward (FlopCounterMode counts 2 FLOPs per multiply-add)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(inputs)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FlopsCost(CostModel):
    """Prices operations in multiply-adds (``metric: macs``) or parameters (``metric: params``)."""

    name: ClassVar[str] = "flops"

    class Config(ComponentConfig):
        metric: Literal["macs", "params"] = "macs"

    @property
    def unit(self) -> str:  # type: ignore[override]
        return "MACs" if self.config.metric == "macs" else "params"

    def measure(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        if self.config.metric == "params":
            return count_params(module)
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        return count_macs(module, torch.zeros(input_shape, device=device))


@hookimpl
def nascore_cost_models():
    return [FlopsCost]
