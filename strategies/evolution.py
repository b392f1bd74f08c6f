"""Regularised evolution (Real et al., AAAI 2019) over the space's decisions, and ``predictor``, which scores its
archs with a performance predictor. A population of ``population`` random archs within the spec's cost budget;
each of ``cycles`` cycles takes ``sample_size`` members at random, mutates the one scored best (one decision changed
to another option, again until the child is within the budget), adds the child and drops the oldest member. Then
the ``top_k`` archs scored best are trained from scratch with the ``train`` budget, and the found arch is the one of
them best on validation.

``predictor``: every arch is scored by a predictor file (``nascore predictor fit`` or ``transfer``), not trained,
as AIO-P pairs its predictor with a mutation-based search. Epoch 0 is the evolution (deterministic given the seed),
epochs 1 to ``top_k`` train one arch each, so a stopped search resumes where it was. (``oneshot`` scores archs on a
supernet's shared weights instead: ``nascore.strategies.oneshot``.)
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from nascore.arch import Arch
from nascore.component import ComponentConfig
from nascore.data import epoch_seed, loader
from nascore.errors import NascoreError
from nascore.hookspecs import hookimpl
from nascore.parts import Parts
from nascore.performance.predictors.file import PredictorFile
from nascore.performance.predictors.samples import measured_sample
from nascore.predictor import Predictor
from nascore.protocols import Choices
from nascore.spec_model import TrainBudget
from nascore.strategy import SearchContext

from .standalone import StandaloneSearch

_STREAM = 12  # the evolution's random stream (nascore.data.epoch_seed)


class EvolutionConfig(ComponentConfig):
    population: int = Field(20, ge=2, description="archs alive at once")
    cycles: int = Field(200, ge=0, description="children proposed")
    sample_size: int = Field(5, ge=1, description="members a parent is chosen from (the best scored)")
    top_k: int = Field(4, ge=1, description="archs scored best that are trained")
    train: TrainBudget = Field(default_factory=TrainBudget, description="how each arch is trained")


class EvolutionSearch(StandaloneSearch):
    """Regularised evolution, then the ``top_k`` archs scored best trained; subclasses score an arch
    (:meth:`score_arch`) and may run epochs of their own before the evolution (:attr:`evolution_epoch`)."""

    @property
    def evolution_epoch(self) -> int:
        """The epoch the evolution runs in; the ``top_k`` trainings follow it."""
        return 0

    @property
    def epochs(self) -> int:
        return self.evolution_epoch + 1 + self.config.top_k

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        c = self.config
        if c.sample_size > c.population:
            raise NascoreError(f"strategy.sample_size {c.sample_size} is larger than strategy.population "
                               f"{c.population}")
        #: +1 when a higher score is better, -1 when lower is
        self.score_sign = 1.0
        #: every distinct arch the evolution scored: choices, cost and score, in the order first scored
        self.proposals: list[dict[str, Any]] = []

    @abstractmethod
    def score_arch(self, choices: Choices, images: torch.Tensor) -> float:
        """One arch's score (``images``: a batch of training images, the same for every arch)."""

    def score_parts(self, choices: Choices) -> dict[str, float]:
        """The measurements a scored arch's score is made of, where there are several (``oneshot``'s ``proxy``);
        written beside the score of each arch the strategy trains, as ``score/<name>``."""
        return {}

    def calibrate(self, population: list[Choices], images: torch.Tensor) -> None:
        """Called with the initial population before any arch is scored: a score made of several measurements
        sets their scales here (``oneshot``'s ``proxy``)."""

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        if epoch == self.evolution_epoch:
            return self.evolve()
        ranked = sorted(self.proposals, key=lambda p: -self.score_sign * p["score"])  # stable
        rank = epoch - self.evolution_epoch
        pick = ranked[rank - 1] if rank - 1 < len(ranked) else None
        if pick is None:
            raise NascoreError(f"strategy.top_k {self.config.top_k}: the evolution scored only {len(ranked)} "
                               "distinct archs")
        parts = {f"score/{name}": value for name, value in pick.get("parts", {}).items()}  # none in older runs
        return {**self.train(self.config.train, f"top_{rank}", pick["choices"]), "score": pick["score"], **parts}

    # -- the evolution ---------------------------------------------------------------------------
    def evolve(self) -> dict[str, Any]:
        c, ctx = self.config, self.ctx
        generator = torch.Generator().manual_seed(epoch_seed(ctx.parts.seed, 0, _STREAM))
        self.proposals, scored = [], {}
        images, _ = next(iter(loader(ctx.parts.train_set, 32, ctx.parts.collate, shuffle=True, seed=ctx.parts.seed)))

        def score(choices: Choices) -> float:
            key = self.key_of(choices)
            if key not in scored:
                scored[key] = self.score_arch(choices, images)
                self.proposals.append({"choices": choices, "cost": self.cost(choices), "score": scored[key],
                                       "parts": self.score_parts(choices)})
            return scored[key]

        with ctx.progress(c.population + c.cycles, "evolution") as advance:
            population = [self.random_arch(generator) for _ in range(c.population)]
            self.calibrate(population, images)
            for arch in population:
                score(arch)
                advance()
            for _ in range(c.cycles):
                picks = torch.randperm(len(population), generator=generator)[:c.sample_size].tolist()
                parent = max((population[i] for i in picks), key=lambda a: self.score_sign * score(a))
                child = self.mutate(parent, generator)
                score(child)
                population = population[1:] + [child]  # the oldest dies
                advance()
        best = max(self.proposals, key=lambda p: self.score_sign * p["score"])
        row = {"proposed": c.population + c.cycles, "distinct": len(self.proposals), "score": best["score"]}
        if best["cost"] is not None:
            row["cost"] = best["cost"]
        return row

    def mutate(self, parent: Choices, generator: torch.Generator) -> Choices:
        """``parent`` with one decision changed to another of its options, within the budget (the parent itself
        when no such change is found)."""
        changeable = [d for d in self.decisions if len(d.options) > 1]
        for _ in range(100):
            d = changeable[int(torch.randint(len(changeable), (1,), generator=generator))]
            others = [o for o in d.options if o != parent[d.name]]
            child = {**parent, d.name: others[int(torch.randint(len(others), (1,), generator=generator))]}
            if self.affordable(child):
                return child
        return dict(parent)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "proposals": [dict(p) for p in self.proposals]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.proposals = [dict(p) for p in state["proposals"]]


class PredictorSearch(EvolutionSearch):
    name: ClassVar[str] = "predictor"

    class Config(EvolutionConfig):
        file: str = Field(description="predictor file that scores the archs (nascore predictor fit or transfer)")
        task: str | None = Field(None, description="the file's task to predict (default: the spec's first task)")
        rank_by: str | None = Field(None, description="score with one of the file's baselines (e.g. macs, naswot) "
                                                      "instead of its predictor")

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        c = self.config
        self.predictor, self.score_sign = file_predictor(c.file, "strategy.file", ctx.parts, c.task, c.rank_by)

    def score_arch(self, choices: Choices, images: torch.Tensor) -> float:
        return predicted(self.predictor, self.ctx.parts, choices, images)


def file_predictor(path: str, field: str, parts: Parts, task: str | None = None, rank_by: str | None = None,
                   task_field: str = "strategy.task") -> tuple[Predictor, float]:
    """The predictor of ``task`` (default: the spec's first task; the spec's ``task_field``) in the predictor file
    ``path`` (the spec's ``field``), or its baseline ``rank_by``, and +1 where a higher prediction is better (-1 where
    lower is); a file of another task or input size is refused naming the field."""
    file = PredictorFile.load(Path(path))
    task = task or parts.tasks[0].name
    if task not in file.tasks:
        raise NascoreError(f"{task_field}: predictor file {path} predicts {', '.join(file.tasks)}, not '{task}'")
    entry = file.tasks[task]
    if rank_by is not None and rank_by not in entry.baselines:
        raise NascoreError(f"strategy.rank_by: predictor file {path} has no baseline '{rank_by}' for '{task}' (it "
                           f"has {', '.join(entry.baselines)})")
    size = (parts.space.input_size, parts.info.in_channels)
    if (file.input_size, file.in_channels) != size:
        raise NascoreError(f"{field}: {path} was fitted on archs measured at {file.in_channels} x "
                           f"{file.input_size} px; the search's are {size[1]} x {size[0]} px")
    return entry.baselines[rank_by] if rank_by else entry.predictor, 1.0 if entry.higher_is_better else -1.0


def predicted(predictor: Predictor, parts: Parts, choices: Choices, images: torch.Tensor) -> float:
    """A predictor's score of one arch: its backbone built (seeded, as ``nascore bench collect`` measures archs) and
    measured as a performance record is (``images``: a batch of training images)."""
    arch = Arch(space=parts.space.name, config=parts.space.arch_config(), choices=choices)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(parts.seed)
        sample = measured_sample(parts.space.build(arch), parts.space.input_size, parts.info.in_channels, images,
                                 parts.tasks[0].name, choices)
    return float(predictor.predict([sample])[0])


@hookimpl
def nascore_search_strategies():
    return [PredictorSearch]
