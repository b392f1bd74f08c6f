"""``random``: random search, the baseline every search must beat (Li and Talwalkar, 2019; Yang et al., 2020).
``archs`` archs drawn uniformly from the space within the spec's cost budget (``cost.loss.target`` of the
``budget`` form; the whole space without one), each trained from scratch with the strategy's ``train`` budget;
the found arch is the one best on validation. One arch per epoch, so a stopped search resumes at its arch. With a
parallel executor (``--executor ray``) every arch still to train is drawn and sent at once, each epoch taking its
arch's result as it comes (results that come early are kept in the checkpoint of the epoch they came in)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from pydantic import Field

from nascore.component import ComponentConfig
from nascore.data import epoch_seed
from nascore.hookspecs import hookimpl
from nascore.protocols import Choices
from nascore.spec_model import TrainBudget
from nascore.strategy import SearchContext

from .standalone import StandaloneSearch, train_arch

_STREAM = 11  # the draws' random stream (nascore.data.epoch_seed)


class RandomSearch(StandaloneSearch):
    name: ClassVar[str] = "random"

    class Config(ComponentConfig):
        archs: int = Field(8, ge=1, description="distinct archs drawn and trained")
        train: TrainBudget = Field(default_factory=TrainBudget, description="how each arch is trained")

    @property
    def epochs(self) -> int:
        return self.config.archs

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        #: results (metrics, note) of archs trained elsewhere ahead of their epoch; the epochs sent to the
        #: executor, in its job order; the iterator of its results
        self.ahead: dict[int, tuple[dict[str, float] | None, str | None]] = {}
        self.sent: list[int] = []
        self.results: Iterator[tuple[int, tuple[dict[str, float] | None, str | None]]] | None = None

    def draw(self, epoch: int, exclude: set[str]) -> Choices:
        """Arch ``epoch``, from its own seeded stream: the same arch whether or not the search was resumed."""
        return self.random_arch(torch.Generator().manual_seed(epoch_seed(self.ctx.parts.seed, epoch, _STREAM)), exclude)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        name, budget = f"arch_{epoch}", self.config.train
        choices = self.draw(epoch, {self.key_of(r["choices"]) for r in self.trained})
        if epoch not in self.ahead:
            if not self.ctx.executor.parallel:
                return self.train(budget, name, choices)
            if self.results is None:
                self.send(epoch)
            while epoch not in self.ahead:
                i, result = next(self.results)
                self.ahead[self.sent[i]] = result
        return self.record(name, choices, *self.ahead.pop(epoch))

    def send(self, first: int) -> None:
        """Draw archs ``first``... (each excluding those before it, as when trained one after another) and send
        those without a result to the executor."""
        exclude, planned = {self.key_of(r["choices"]) for r in self.trained}, {}
        for epoch in range(first, self.epochs):
            planned[epoch] = self.draw(epoch, exclude)
            exclude.add(self.key_of(planned[epoch]))
        self.sent = [e for e in planned if e not in self.ahead]
        self.results = self.ctx.executor.run(train_arch, [(self.config.train, f"arch_{e}", planned[e])
                                                          for e in self.sent], self.ctx.parts)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ahead": [[e, m, n] for e, (m, n) in sorted(self.ahead.items())]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ahead = {e: (m, n) for e, m, n in state.get("ahead", [])}


@hookimpl
def nascore_search_strategies():
    return [RandomSearch]
