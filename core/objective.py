"""Loss forms combining a task loss with an architecture's expected cost; selected by ``form``."""
from __future__ import annotations

import math
from typing import Annotated, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def check_bounds(self, lowest: float, highest: float, unit: str) -> str | None:
        """A message when the space's cost range makes this form useless, else None."""
        return None


class Multiplicative(_Form):
    """FBNet: ``loss * alpha * log(cost / scale) ** beta``; ``cost / scale`` must exceed 1 for every arch
    (the paper prices latency in ms; ``scale`` brings sub-unit costs, e.g. 0.3 ms on a fast target, above 1)."""

    form: Literal["multiplicative"] = "multiplicative"
    alpha: float = Field(0.2, gt=0)
    beta: float = Field(0.6, gt=0)
    scale: float = Field(1.0, gt=0)

    def __call__(self, task_loss: Tensor, cost: Tensor) -> Tensor:
        return task_loss * self.alpha * torch.log((cost / self.scale).clamp_min(1.0 + 1e-6)) ** self.beta

    def check_bounds(self, lowest: float, highest: float, unit: str) -> str | None:
        if lowest / self.scale > 1.0:
            return None
        return (f"cost.loss.scale: the cheapest arch costs {lowest:.4g} {unit}, so log(cost / scale) with scale "
                f"{self.scale:g} is not positive and gives no gradient; set scale below {lowest:.3g} "
                f"(e.g. {_round_down(lowest / 10):g})")


class Additive(_Form):
    """``loss + lambda * cost / scale`` (``scale`` puts the cost in a unit where lambda is readable)."""

    form: Literal["additive"]
    lambda_: float = Field(0.1, ge=0, alias="lambda")
    scale: float = Field(1e6, gt=0)

    def __call__(self, task_loss: Tensor, cost: Tensor) -> Tensor:
        return task_loss + self.lambda_ * cost / self.scale


class Budget(_Form):
    """A hinge above a target: ``loss + lambda * max(0, cost / target - 1)``; free below the target.

    ``target`` is in the cost model's unit (ms for ``latency``, MACs for ``flops``, bytes for ``memory``).
    """

    form: Literal["budget"]
    target: float = Field(gt=0)
    lambda_: float = Field(1.0, ge=0, alias="lambda")

    def __call__(self, task_loss: Tensor, cost: Tensor) -> Tensor:
        return task_loss + self.lambda_ * torch.relu(cost / self.target - 1.0)

    def check_bounds(self, lowest: float, highest: float, unit: str) -> str | None:
        if lowest <= self.target:
            return None
        return (f"cost.loss.target: {self.target:g} {unit} is below the cheapest arch of the space "
                f"({lowest:.4g} {unit}); no arch can meet it")


def _round_down(x: float) -> float:
    """``x`` rounded down to one significant digit (a readable suggestion)."""
    p = 10 ** math.floor(math.log10(x))
    return math.floor(x / p) * p


Objective = Annotated[Union[Multiplicative, Additive, Budget], Field(discriminator="form")]
