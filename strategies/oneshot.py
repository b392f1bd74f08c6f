"""``oneshot``: SPOS' search (Guo et al., ECCV 2020). The space's supernet is trained once, one-shot, under a
sampling rule (``nascore.performance.oneshot``: ``uniform`` single path as SPOS, ``fair``, ``sandwich``) for
``supernet.epochs`` epochs; then regularised evolution (``nascore.strategies.evolution``) within the spec's cost
budget scores each arch on the shared weights (its path, BatchNorm re-estimated on ``bn_batches`` training batches,
then the first task's primary metric on the validation split), and the ``top_k`` archs scored best are trained from
scratch with the ``train`` budget; the found arch is the one of them best on validation.

What scores an arch on the shared weights is the first task's primary metric (``score: metric``) or its validation
loss (``score: loss``: continuous where top-1 counts images). With ``proxy`` a zero-cost proxy of the untrained arch
(``nascore.performance.proxies``; NASWOT on the evolution's batch of training images), or with ``predictor`` a
predictor file's prediction (AIO-P: ``nascore predictor fit`` or ``transfer``), is a second opinion: each of the two
is standardised by its mean and standard deviation over the evolution's initial population, and their sum is the
score (in FBNetV2's masked space NASWOT and the shared weights rank archs better together than either alone:
BENCHMARKS.md).

One supernet epoch per search epoch, then the evolution, then one arch trained per epoch: a stopped search resumes
at the epoch it was in. The trained supernet is kept as ``<run>/supernet.pt`` (``nascore.performance.supernet_file``);
a search with ``supernet_file`` (``nascore run SPEC --supernet FILE``) reuses one instead of training, and starts
with the evolution: a new cost budget or latency table answered without training the supernet again.

The supernet trains on the spec's first task. Under torchrun it trains data-parallel (each rank a share of every
batch, the same paths on every rank, gradients averaged by DDP); the evolution and the ``top_k`` trainings are
repeated on every rank, which get the same scores and the same arch. Paths train and are scored exactly where the
supernet computes every path as its standalone arch does: FBNet's ``shared_weights`` with the options such a
supernet trains (BENCHMARKS.md, "Supernets that rank")."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from nascore import distributed
from nascore.arch import Arch
from nascore.data import epoch_seed, to_device
from nascore.errors import NascoreError
from nascore.hookspecs import hookimpl
from nascore.loops import set_lr, weight_optimizer
from nascore.performance.oneshot import DATA, PATHS, OneShot, PathSampler, batches, extremes, oneshot_step, scheduled_lr
from nascore.performance.proxies import naswot, scale, synflow
from nascore.performance.supernet_file import load_supernet, save_supernet, spec_blocks
from nascore.protocols import Choices
from nascore.spec_model import RunSpec, TrainBudget
from nascore.strategy import SHARED, SearchContext, evaluate_arch

from .evolution import EvolutionConfig, EvolutionSearch, file_predictor, predicted

BN_STREAM = 13  # the batches that re-estimate BatchNorm statistics before an arch is scored (nascore.data.epoch_seed)
SUPERNET_FILE = "supernet.pt"  # in the run directory


class OneShotSearch(EvolutionSearch):
    name: ClassVar[str] = "oneshot"

    class Config(EvolutionConfig):
        supernet: TrainBudget = Field(default_factory=lambda: TrainBudget(epochs=12), description=(
            "how the supernet trains (its epochs are the search's first epochs)"))
        one_shot: OneShot = Field(default_factory=OneShot, description="the paths each supernet step trains")
        bn_batches: int = Field(8, ge=1, description="training batches that re-estimate BatchNorm statistics on "
                                                     "an arch's path before it is scored")
        cycles: int = Field(100, ge=0, description="children proposed")
        score: Literal["metric", "loss"] = Field("metric", description=(
            "what ranks an arch on the shared weights: the first task's primary metric, or its validation loss"))
        proxy: Literal["naswot", "synflow"] | None = Field(None, description=(
            "a zero-cost proxy of the untrained arch added to the shared weights' score, each standardised over "
            "the evolution's initial population"))
        predictor: str | None = Field(None, description=(
            "a predictor file (nascore predictor fit or transfer) whose prediction for the spec's first task is "
            "added to the shared weights' score as proxy is (not with proxy)"))
        supernet_file: str | None = Field(None, description=(
            "a supernet.pt of an earlier oneshot run (the same space, data and tasks) reused instead of training "
            "one (supernet and one_shot are then unused): the search starts with the evolution"))

        @model_validator(mode="after")
        def _one_second_score(self) -> OneShotSearch.Config:
            if self.proxy is not None and self.predictor is not None:
                raise ValueError("give proxy or predictor (the second score added to the shared weights'), not both")
            return self

        @property
        def second(self) -> str | None:
            """The name of the second score: the proxy's, "predictor", or None."""
            return self.proxy or ("predictor" if self.predictor else None)

    @property
    def evolution_epoch(self) -> int:
        return 0 if self.config.supernet_file else self.config.supernet.epochs

    def check_inputs(self, spec: RunSpec) -> None:
        """A ``supernet_file`` of another space, data or tasks is refused before the run's data is built."""
        if self.config.supernet_file:
            load_supernet(Path(self.config.supernet_file), spec_blocks(spec))

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        cfg = self.config.supernet
        self.task = ctx.parts.tasks[0]
        #: +1 when a higher shared-weights score is better
        self.shared_sign = 1.0 if self.higher_is_better and self.config.score == "metric" else -1.0
        self.score_sign = 1.0 if self.config.second else self.shared_sign
        #: the predictor of ``predictor`` and +1 where its higher predictions are better
        self.predictor = file_predictor(self.config.predictor, "strategy.predictor", ctx.parts,
                                        task_field="strategy.predictor") if self.config.predictor else None
        #: the second score's and the shared score's (mean, standard deviation) over the initial population
        self.scales: tuple[tuple[float, float], tuple[float, float]] | None = None
        self.measured: dict[str, tuple[float, float]] = {}
        self.optimizer = weight_optimizer(ctx.network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum,
                                          cfg.weight_decay)
        self.weight_net = distributed.wrap(ctx.network, find_unused_parameters=True)  # a path leaves weights out
        self.largest = self.smallest = None
        if self.config.supernet_file:
            state, _ = load_supernet(Path(self.config.supernet_file), ctx.parts, ctx.parts.device)
            try:
                ctx.network.load_state_dict(state)
            except RuntimeError as exc:  # the identity matched but the tensors do not: a damaged or foreign file
                raise NascoreError(f"strategy.supernet_file {self.config.supernet_file}: its weights do not fit "
                                   f"the spec's supernet ({str(exc).splitlines()[0]})") from None
        elif self.config.one_shot.rule == "sandwich":
            self.largest, self.smallest = extremes(ctx.supernet, ctx.parts.space.input_size,
                                                   ctx.parts.info.in_channels)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        if epoch < self.evolution_epoch:
            row = self.train_supernet(epoch)
            if epoch == self.evolution_epoch - 1:
                self.save_supernet()
            return row
        return super().run_epoch(epoch)

    def save_supernet(self) -> None:
        """Keep the trained supernet (and the tasks' heads) in the run directory for later searches."""
        ctx, c = self.ctx, self.config
        if ctx.out_dir is not None and distributed.is_main():
            save_supernet(ctx.out_dir / SUPERNET_FILE, ctx.parts, ctx.network.state_dict(),
                          {"epochs": c.supernet.epochs, "one_shot": c.one_shot.model_dump(),
                           "train": c.supernet.model_dump(mode="json"), "seed": ctx.parts.seed})

    def train_supernet(self, epoch: int) -> dict[str, Any]:
        """One epoch of one-shot training of the supernet (``ctx.network``: the supernet and the tasks' heads)."""
        ctx, cfg, parts = self.ctx, self.config.supernet, self.ctx.parts
        rng = random.Random(epoch_seed(parts.seed, epoch, PATHS))
        sampler = PathSampler(self.decisions, self.config.one_shot, rng, self.largest, self.smallest)
        set_lr(self.optimizer, scheduled_lr(cfg, epoch, cfg.epochs))
        ctx.network.train()
        total, steps, data = 0.0, 0, batches(parts, cfg, epoch, DATA, shard=True)
        with ctx.progress(len(data), f"supernet epoch {epoch} ({epoch + 1}/{cfg.epochs})") as advance:
            for step, (images, targets) in enumerate(data):
                images, targets = to_device(images, parts.device), to_device(targets, parts.device)
                total += oneshot_step(self.weight_net, ctx.supernet, self.task, sampler.step(), images, targets,
                                      self.optimizer, self.config.one_shot, epoch, step, ctx.precision)
                steps += 1
                advance()
        return {"lr": self.optimizer.param_groups[0]["lr"], "supernet_loss": total / max(steps, 1)}

    def shared_score(self, choices: Choices) -> float:
        """The arch's metric (or loss) on the shared weights, BatchNorm re-estimated on its path (the same batches
        for every arch)."""
        c = self.config
        bn = (b for _, b in zip(range(c.bn_batches), batches(self.ctx.parts, c.supernet, 0, BN_STREAM)))
        metrics = evaluate_arch(self.ctx, choices, SHARED, bn, c.supernet.batch_size)
        return float(metrics[self.key if c.score == "metric" else f"{self.task.name}/loss"])

    def second_score(self, choices: Choices, images: torch.Tensor) -> float:
        """The zero-cost proxy of the arch built untrained (seeded, as ``nascore bench collect`` measures archs), or
        the predictor file's prediction, made higher-is-better."""
        parts = self.ctx.parts
        if self.predictor is not None:
            predictor, sign = self.predictor
            return sign * predicted(predictor, parts, choices, images)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(parts.seed)
            backbone = parts.space.build(Arch(space=parts.space.name, config=parts.space.arch_config(),
                                              choices=choices)).to(parts.device)
        if self.config.proxy == "naswot":
            return naswot(backbone, images)
        return synflow(backbone, parts.space.input_size, parts.info.in_channels)

    def measure(self, choices: Choices, images: torch.Tensor) -> tuple[float, float]:
        """The second score and the shared score made higher-is-better, measured once per arch."""
        key = self.key_of(choices)
        if key not in self.measured:
            self.measured[key] = (self.second_score(choices, images), self.shared_sign * self.shared_score(choices))
        return self.measured[key]

    def calibrate(self, population: list[Choices], images: torch.Tensor) -> None:
        if self.config.second is None:
            return
        proxy, shared = zip(*(self.measure(a, images) for a in population), strict=True)
        self.scales = scale(proxy), scale(shared)

    def score_arch(self, choices: Choices, images: torch.Tensor) -> float:
        """The shared weights' score; with ``proxy`` or ``predictor``, the sum of the two standardised scores (an
        arch whose proxy is not finite, such as NASWOT's singular kernel, scores lowest)."""
        if self.config.second is None:
            return self.shared_score(choices)
        values = self.measure(choices, images)
        return sum((v - mean) / sd for v, (mean, sd) in zip(values, self.scales, strict=True))

    def score_parts(self, choices: Choices) -> dict[str, float]:
        """With ``proxy`` or ``predictor``: its value (a prediction as the file predicts it) and the shared weights'
        metric (or loss), as measured."""
        second = self.config.second
        if second is None:
            return {}
        value, shared = self.measured[self.key_of(choices)]
        if self.predictor is not None:
            value *= self.predictor[1]
        return {second: value, "shared": self.shared_sign * shared}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])


@hookimpl
def nascore_search_strategies():
    return [OneShotSearch]
