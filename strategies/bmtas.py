"""BMTAS (Bruggemann et al., BMVC 2020): searches where tasks share layers and where they branch, on the
``branched`` space. Defaults follow the public reference code: Gumbel-softmax (soft, one sample per layer and
task per step); a warm-up of 1/20 of the epochs with every task on its own copy; then the temperature falls
linearly from 5.0 to 0.1; per epoch an architecture pass on 20% of the training split (Adam, lr 1e-2, weight
decay 5e-5, its state reset every epoch, BatchNorm on batch statistics) and a weight pass on the other 80%
(Adam, lr 1e-3, weight decay 1e-4, state reset after each architecture pass, BatchNorm statistics re-estimated);
resource loss = the exact expected cost of the branched encoder under softmax(theta), combined with the task
losses by the spec's ``cost.loss`` (BMTAS: ``form: additive``). One difference: theta starts from seeded noise
(``init_std``), not from the reference's zeros, where the resource loss has no gradient.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from nascore import distributed
from nascore.component import ComponentConfig
from nascore.errors import NascoreError
from nascore.hookspecs import hookimpl
from nascore.protocols import MultiTaskBackbone, Sampling
from nascore.strategy import SHARED, SearchContext, entropy, evaluate_arch
from nascore.supernet import Decision

from .gumbel import ArchPass, GumbelSearch


class LinearTemperature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    initial: float = Field(5.0, gt=0)
    final: float = Field(0.1, gt=0)


class WeightAdam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)


class ArchAdam(ArchPass):
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(5e-5, ge=0)


class BMTAS(GumbelSearch, Sampling):
    """Branched multi-task architecture search over the ``branched`` space."""

    name: ClassVar[str] = "bmtas"

    class Config(ComponentConfig):
        epochs: int = Field(160, ge=2)
        warmup_epochs: int | None = Field(None, ge=0, description="epochs with every task on its own copy; "
                                                                  "default epochs // 20 (the reference's)")
        batch_size: int = Field(16, ge=1)
        arch_fraction: float = Field(0.2, gt=0, lt=1)
        temperature: LinearTemperature = LinearTemperature()
        weights: WeightAdam = WeightAdam()
        arch: ArchAdam = ArchAdam()
        #: steps per epoch cap for each pass (None = the whole split); for quick runs
        max_steps: int | None = Field(None, ge=1)
        #: training batches that re-estimate BatchNorm statistics before the derived arch is evaluated
        bn_batches: int = Field(8, ge=1)
        init_std: float = Field(0.1, ge=0, description=(
            "std of the seeded Gaussian noise theta starts from; 0 = uniform, the reference code's start, where "
            "the expected cost has zero gradient (a saddle) and the resource loss cannot act"))

        @model_validator(mode="after")
        def _some_search(self) -> BMTAS.Config:
            if self.warmup >= self.epochs:
                raise ValueError(f"warmup_epochs ({self.warmup}) must be less than epochs ({self.epochs})")
            return self

        @property
        def warmup(self) -> int:
            return self.epochs // 20 if self.warmup_epochs is None else self.warmup_epochs

        def temperature_at(self, epoch: int) -> float:
            """Linear from ``initial`` at the first search epoch to ``final`` at the last one."""
            searched = self.epochs - self.warmup - 1
            if searched <= 0:
                return self.temperature.initial
            progress = min(max(epoch - self.warmup, 0) / searched, 1.0)
            return self.temperature.initial + progress * (self.temperature.final - self.temperature.initial)

    def setup(self, ctx: SearchContext) -> None:
        net = ctx.supernet
        if not isinstance(net, MultiTaskBackbone) or any(d.stream is None for d in net.decisions()):
            raise NascoreError("strategy 'bmtas' searches the 'branched' space (space: {name: branched, backbone: "
                               f"...}}); space '{type(net).__name__}' has no branch decisions")
        super().setup(ctx)
        cfg = self.config
        # Uniform theta is a stationary point of the expected cost: tasks share only by agreeing on a copy, and
        # at uniform no copy is preferred. Adam's first, sign-like steps after each reset then move every logit
        # by exactly lr, so the task losses' pull towards the own copies (trained in the warm-up) stays exactly
        # anti-symmetric and the resource term only pulls it back: sharing never starts. Seeded noise breaks
        # the tie (tests/test_bmtas.py: a heavy lambda then lowers the expected cost every epoch).
        noise = torch.Generator().manual_seed(ctx.parts.seed)
        with torch.no_grad():
            for t in self.theta.values():
                t.add_(cfg.init_std * torch.randn(t.shape, generator=noise).to(t))
        # warm-up: task t on copy t
        self.own = {d.name: torch.eye(len(net.tasks), device=ctx.parts.device)[net.tasks.index(d.stream)]
                    for d in self.decisions}
        self.w_opt = torch.optim.Adam(ctx.network.parameters(), lr=cfg.weights.lr,
                                      weight_decay=cfg.weights.weight_decay)
        self.a_opt = torch.optim.Adam(self.theta.values(), lr=cfg.arch.lr, weight_decay=cfg.arch.weight_decay)
        distributed.average_gradients(self.a_opt)

    def probabilities(self) -> dict[str, Tensor]:
        return {n: torch.softmax(t, 0) for n, t in self.theta.items()}

    # -- one epoch ---------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        warm = epoch < cfg.warmup
        tau = cfg.temperature_at(epoch)
        row: dict[str, Any] = {"temperature": tau, "warmup": warm}
        if not warm:
            row.update(self._arch_pass(epoch, tau))
        own, sampled = (lambda noise: self.own), (lambda noise: self._gumbel(tau, grad=False, noise=noise))
        row.update(self._weight_pass(epoch, own if warm else sampled))
        row.update(self._distribution_stats())  # its expected_cost (after the epoch) replaces the arch pass's mean
        row.update(self._evaluate_derived(epoch))
        return row

    def _norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.ctx.supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _resource(self, mix: Mapping[str, Tensor]) -> Tensor:
        """The exact expected cost under softmax(theta), not under the step's Gumbel sample."""
        return self.ctx.cost_table.expected(self.probabilities())

    def _arch_pass(self, epoch: int, tau: float) -> dict[str, float]:
        self.a_opt.state = defaultdict(dict)  # the reference restarts Adam's moments every epoch
        for m in self._norms():  # batch statistics only: the running ones would mix architectures
            m.track_running_stats = False
        row = super()._arch_pass(epoch, tau)
        self.w_opt.state = defaultdict(dict)  # the architecture changed: restart the weights' Adam moments
        for m in self._norms():
            m.track_running_stats = True
            m.reset_running_stats()
        return row

    def _distribution_stats(self) -> dict[str, Any]:
        mean = sum(float(entropy(t.detach())) for t in self.theta.values()) / len(self.theta)
        row: dict[str, Any] = {"entropy": mean}
        if self.ctx.cost_table is not None:
            probs = {n: p.detach() for n, p in self.probabilities().items()}
            row["expected_cost"] = float(self.ctx.cost_table.expected(probs))
        return row

    def _evaluate_derived(self, epoch: int) -> dict[str, Any]:
        ctx, choices = self.ctx, self.derive()[SHARED]
        # every rank the same batches: alike BatchNorm statistics, so alike metrics on the whole validation set
        _, batches = self._batches(self.weight_set, epoch, stream=2, limit=self.config.bn_batches, shard=False)
        out: dict[str, Any] = {f"val/{k}": v for k, v in
                               evaluate_arch(ctx, choices, SHARED, batches, self.config.batch_size).items()}
        if ctx.cost_table is not None:
            out["derived_cost"] = ctx.cost_table.of_choices(choices)
        return out

    # -- results and state -------------------------------------------------------------------
    def derive(self) -> dict[str | None, dict[str, str]]:
        """Each task's most likely copy per layer, as a tree (tasks share a layer only if they share the one
        before), copies renumbered so that equal numbers mean shared."""
        return {SHARED: self.ctx.supernet.canonical({d.name: d.options[int(self.theta[d.name].detach().argmax())]
                                                   for d in self.decisions})}

    def sample(self, n: int, generator: torch.Generator) -> dict[str | None, list[dict[str, str]]]:
        probs = {name: p.detach().cpu() for name, p in self.probabilities().items()}

        def draw(d: Decision) -> str:
            return d.options[int(torch.multinomial(probs[d.name], 1, generator=generator))]

        return {SHARED: [self.ctx.supernet.canonical({d.name: draw(d) for d in self.decisions}) for _ in range(n)]}


@hookimpl
def nascore_search_strategies():
    return [BMTAS]
