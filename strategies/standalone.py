"""What the strategies that train each arch they consider on its own, from scratch, share (``random``,
``predictor``): archs drawn under the spec's cost budget, one arch trained per epoch (so a stopped search resumes
at the arch it was training, and the archs before it are not trained again), and the found arch is the one best
on validation. Each arch is trained as ``nascore train`` trains it (seeded by the spec's seed, every epoch
reseeded), so retraining the found arch with the same budget gives the same metrics."""
from __future__ import annotations

import json
from typing import Any

import torch

from nascore.arch import Arch
from nascore.data import epoch_seed
from nascore.errors import NascoreError, NonFiniteLossError
from nascore.loops import weight_optimizer
from nascore.objective import Budget
from nascore.parts import Parts
from nascore.progress import Progress, no_progress
from nascore.protocols import Choices, Evaluating
from nascore.spec_model import TrainBudget
from nascore.strategy import SHARED, SearchContext, SearchStrategy
from nascore.supernet import random_choices
from nascore.task import build_network
from nascore.train import train_epoch, validate

#: draws of a random arch before giving up on finding one under the budget that was not drawn before
MAX_DRAWS = 2000


def train_arch(parts: Parts, budget: TrainBudget, name: str, choices: Choices,
               progress: Progress = no_progress) -> tuple[dict[str, float] | None, str | None]:
    """Train one arch of the run's space from scratch as ``nascore train`` does (seeded by the seed alone, every
    epoch reseeded): its validation metrics (keys without ``val/``), or None and a note when its training diverged.
    An executor's job (``parts`` is sent once to its workers)."""
    space, seed = parts.space, parts.seed
    arch = Arch(space=space.name, config=space.arch_config(), choices=choices)
    torch.manual_seed(seed)
    precision = parts.precision()  # a loss scale of its own per arch
    network = precision.network(build_network(space.build(arch), parts.tasks, parts.info).to(parts.device))
    optimizer = weight_optimizer(network.parameters(), budget.optimizer, budget.lr, budget.momentum,
                                 budget.weight_decay)
    try:
        for epoch in range(budget.epochs):
            torch.manual_seed(epoch_seed(seed, epoch, stream=99))  # as nascore train's epochs
            train_epoch(network, optimizer, parts.tasks, parts.train_set, parts.collate, budget, seed, epoch,
                        parts.device, progress, f"{name} epoch {epoch} ({epoch + 1}/{budget.epochs})", precision)
        metrics = validate(network, parts.val_set, parts.collate, parts.tasks, budget, parts.device)
    except NonFiniteLossError as exc:
        return None, f"training diverged (non-finite loss at epoch {exc.epoch}, step {exc.step})"
    return {k.removeprefix("val/"): v for k, v in metrics.items()}, None


class StandaloneSearch(SearchStrategy, Evaluating):
    """Subclasses' ``Config`` has a ``train`` field (a :class:`~nascore.spec.TrainBudget`): how each arch is
    trained. ``trained`` holds a record per arch trained: its name, choices, cost (None without a cost model)
    and validation metrics (None when its training diverged)."""

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        self.decisions = ctx.supernet.decisions()
        owned = [d.name for d in self.decisions if d.task is not SHARED]
        if owned:
            raise NascoreError(f"strategy '{self.name}' searches archs every task shares; space "
                               f"'{ctx.parts.space.name}' has per-task decisions ({', '.join(owned[:3])}, ...)")
        task = ctx.parts.tasks[0]
        self.key, self.higher_is_better = f"{task.name}/{task.primary_metric}", task.higher_is_better
        #: the cost an arch may have at most: the spec's ``cost.loss.target`` when its form is ``budget``
        self.limit = (ctx.objective.target if isinstance(ctx.objective, Budget) and ctx.cost_table is not None
                      else None)
        self.trained: list[dict[str, Any]] = []

    # -- drawing archs under the budget ----------------------------------------------------------
    def cost(self, choices: Choices) -> float | None:
        return self.ctx.cost_table.of_choices(choices) if self.ctx.cost_table is not None else None

    def affordable(self, choices: Choices) -> bool:
        return self.limit is None or self.cost(choices) <= self.limit

    def key_of(self, choices: Choices) -> str:
        """One spelling per arch (``Supernet.canonical``), to tell archs apart."""
        return json.dumps(self.ctx.supernet.canonical(choices), sort_keys=True)

    def random_arch(self, generator: torch.Generator, exclude: set[str] = frozenset()) -> Choices:
        """A uniformly random arch within the budget whose key is not in ``exclude``."""
        for _ in range(MAX_DRAWS):
            choices = random_choices(self.decisions, generator)
            if self.key_of(choices) not in exclude and self.affordable(choices):
                return choices
        raise NascoreError(f"strategy '{self.name}': no new arch within cost.loss.target {self.limit:g} "
                           f"{self.ctx.cost_table.unit} in {MAX_DRAWS} random draws; raise the target"
                           if self.limit is not None else
                           f"strategy '{self.name}': no new arch of the space in {MAX_DRAWS} random draws; the space "
                           "has fewer archs than the strategy trains")

    # -- training ------------------------------------------------------------------------------
    def train(self, budget: TrainBudget, name: str, choices: Choices) -> dict[str, Any]:
        """Train one arch with ``budget`` in this process, record it, and return the epoch's metrics row."""
        metrics, note = train_arch(self.ctx.parts, budget, name, choices, self.ctx.progress)
        return self.record(name, choices, metrics, note)

    def record(self, name: str, choices: Choices, metrics: dict[str, float] | None, note: str | None
               ) -> dict[str, Any]:
        """Record an arch trained (``metrics`` None: its training diverged, ``note`` says how) and return the
        epoch's metrics row."""
        record: dict[str, Any] = {"name": name, "choices": choices, "cost": self.cost(choices), "metrics": metrics}
        if note is not None:
            record["note"] = note
        self.trained.append(record)
        # the arch just trained under "trained/"; under "val/", the best so far (the arch derive() gives)
        row: dict[str, Any] = {"arch": name, "archs_trained": len(self.trained)}
        if record["cost"] is not None:
            row["cost"] = record["cost"]
        row.update({f"trained/{k}": v for k, v in (record["metrics"] or {}).items()})
        best = self.best()
        if best is not None:
            row["best"] = best["name"]
            row.update({f"val/{k}": v for k, v in best["metrics"].items()})
        return row

    def best(self) -> dict[str, Any] | None:
        """The record of the arch best on validation (the first such one), None before any trained."""
        done = [r for r in self.trained if r["metrics"] is not None]
        sign = 1.0 if self.higher_is_better else -1.0
        return max(done, key=lambda r: sign * r["metrics"][self.key], default=None)

    # -- results and state -----------------------------------------------------------------------
    def derive(self) -> dict[str | None, Choices]:
        best = self.best()
        if best is None:
            raise NascoreError(f"strategy '{self.name}': the training of every arch diverged; no arch was found "
                               "(lower the strategy's train.lr)")
        return {SHARED: dict(best["choices"])}

    def evaluated(self) -> dict[str | None, list[tuple[str, Choices, dict[str, float]]]]:
        return {SHARED: [(r["name"], dict(r["choices"]), dict(r["metrics"])) for r in self.trained
                         if r["metrics"] is not None]}

    def state_dict(self) -> dict[str, Any]:
        return {"trained": [dict(r) for r in self.trained]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trained = [dict(r) for r in state["trained"]]
