"""``random``: random search, the baseline every search must beat (Li and Talwalkar, 2019; Yang et al., 2020).
``archs`` archs drawn uniformly from the space within the spec's cost budget (``cost.loss.target`` of the
``budget`` form; the whole space without one), each trained from scratch with the strategy's ``train`` budget;
the found arch is the one best on validation. One arch per epoch, so a stopped search resumes at its arch."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from ..component import ComponentConfig
from ..data import epoch_seed
from ..hookspecs import hookimpl
from ..spec import TrainBudget
from .standalone import StandaloneSearch

_STREAM = 11  # the draws' random stream (nascore.data.epoch_seed)


class RandomSearch(StandaloneSearch):
    name: ClassVar[str] = "random"

    class Config(ComponentConfig):
        archs: int = Field(8, ge=1, description="distinct archs drawn and trained")
        train: TrainBudget = Field(default_factory=TrainBudget, description="how each arch is trained")

    @property
    def epochs(self) -> int:
        return self.config.archs

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Draw arch ``epoch`` (from its own seeded stream: the same arch whether or not the search was resumed)
        and train it."""
        generator = torch.Generator().manual_seed(epoch_seed(self.ctx.seed, epoch, _STREAM))
        choices = self.random_arch(generator, {self.key_of(r["choices"]) for r in self.trained})
        return self.train(self.config.train, f"arch_{epoch}", choices)


@hookimpl
def nascore_search_strategies():
    return [RandomSearch]
