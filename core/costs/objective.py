"""Loss forms combining a task loss with an architecture's expected cost; selected by ``form``."""
from __future__ import annotations

from typing import Annotated, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Multiplicative(_Form):
    """FBNet: ``loss * alpha * log(cost) ** beta`` (cost in the cost model's unit, must exceed 1)."""

    form: Literal["multiplicative"] = "multiplicative"
    alpha: float = Field(0.2, gt=0)
    beta: float = Field(0.6, gt=0)

    def __call__(self, task_loss: Tensor, cost: Tensor) -> Tensor:
        return task_loss * self.alpha * torch.log(cost.clamp_min(1.0 + 1e-6)) ** self.beta


class Additive(_Form):
    """``loss + lambda * cost / scale`` (``scale`` puts the cost in a unit where lambda is readable)."""

    form: Literal["additive"]
    lambda_: float = Field(0.1, ge=0, alias="lambda")
    scale: float = Field(1e6, gt=0)

    def __call__(self, task_loss: Tensor, cost: Tensor) -> Tensor:
        return task_loss + self.lambda_ * cost / self.scale


Objective = Annotated[Union[Multiplicative, Additive], Field(discriminator="form")]
