"""Search strategies: own the architecture parameters, run epochs of search, derive archs."""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

import torch

from .component import Component
from .cost import CostModel
from .data import loader
from .executor import Executor, LocalExecutor
from .loops import evaluate, recalibrate_batchnorm
from .parts import Parts
from .precision import FULL, Precision
from .progress import Progress, no_progress
from .protocols import CostEstimate
from .supernet import Decision, Supernet
from .task import Network, Task

if TYPE_CHECKING:
    from .spec_model import RunSpec

#: owner: the task an arch is for, or SHARED (None) for an arch all tasks share
SHARED: Final = None


@dataclass
class SearchContext:
    """Everything a strategy searches with: the run's parts (data, tasks, space, device, seed) and what the runner
    built for the search from them."""

    parts: Parts
    network: Network  # supernet backbone + one head per task
    supernet: Supernet
    cost_model: CostModel | None = None
    cost_table: CostEstimate | None = None
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    #: ``progress(total, description)`` -> context manager yielding an ``advance()`` callable
    progress: Progress = no_progress
    #: where archs trained on their own may train (the ``random`` strategy's): ``--executor``
    executor: Executor = field(default_factory=LocalExecutor)
    #: the spec's ``amp`` and ``channels_last`` for the search's steps (``train_step(..., precision=)``)
    precision: Precision = FULL
    #: the run directory, where a strategy may keep files of its own (the main process writes them); None: keep none
    out_dir: Path | None = None


class SearchStrategy(Component):
    """Subclasses' ``Config`` has an ``epochs`` field (or the subclass overrides ``epochs``); the runner loops,
    checkpoints after every epoch and logs.

    A strategy that can draw archs from its search distribution also subclasses
    :class:`~nascore.protocols.Sampling` (the Pareto step's candidates).
    """

    kind: ClassVar[str] = "strategy"

    def check_inputs(self, spec: RunSpec) -> None:
        """Check the files the strategy's config names (``oneshot``'s ``supernet_file``) against the run's spec;
        raise a NascoreError naming the field. Called before the run builds its data or writes anything (on every
        rank under torchrun); the default has nothing to check."""

    def setup(self, ctx: SearchContext) -> None:
        self.ctx = ctx

    @property
    def epochs(self) -> int:
        return self.config.epochs

    @abstractmethod
    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of search; returns the metrics row for ``metrics.jsonl``."""

    @abstractmethod
    def derive(self) -> dict[str | None, dict[str, str]]:
        """The found architecture(s): choices per owner (``{SHARED: choices}`` when all tasks share one arch)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The strategy's state for the search checkpoint: what ``load_state_dict`` restores."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()`` of the same strategy (``--resume``)."""


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)``, one decision's distribution over its options; differentiable."""
    return -(torch.softmax(logits, 0) * torch.log_softmax(logits, 0)).sum()


def owners(decisions: list[Decision]) -> Iterator[str | None]:
    """The tasks that own decisions, or just ``SHARED`` when every decision is shared."""
    tasks = sorted({d.task for d in decisions if d.task is not SHARED})
    yield from tasks or [SHARED]


def owner_name(owner: str | None) -> str:
    """How outputs (summary.json, pareto.csv and .png) name an owner: its task, or "shared"."""
    return "shared" if owner is SHARED else owner


def owner_tasks(tasks: list[Task], owner: str | None) -> list[Task]:
    """The tasks an arch of ``owner`` serves: all of them for a shared arch."""
    return [t for t in tasks if owner is SHARED or t.name == owner]


def evaluate_arch(ctx: SearchContext, choices: Mapping[str, str], owner: str | None, bn_batches: Iterable,
                  batch_size: int) -> dict[str, float]:
    """Validation metrics of one discrete arch (``choices`` for every decision) on the supernet's shared
    weights: its one-hot mix, BatchNorm statistics re-estimated on ``bn_batches``, the tasks of ``owner``."""
    parts = ctx.parts
    ctx.supernet.set_choices(choices)
    recalibrate_batchnorm(ctx.network, bn_batches, parts.device)
    val = loader(parts.val_set, batch_size, parts.collate, shuffle=False)
    return evaluate(ctx.network, val, owner_tasks(parts.tasks, owner), parts.device)
