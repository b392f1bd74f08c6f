"""DNAS (FBNet): Gumbel-softmax over every decision, weights on 80% of the training split alternating
with architecture steps (Adam) on the other 20%, a temperature that falls over the architecture epochs.

Defaults for a CPU-sized search (BENCHMARKS "DNAS that decides"): the temperature from 5.0 to 0.5 over the
architecture epochs, Adam at lr 0.2 on theta. FBNet's own settings are ``temperature: {initial: 5.0, decay:
0.045}`` and ``arch: {lr: 0.01}`` (90 epochs, the first 10 weights only)."""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nascore import distributed
from nascore.component import ComponentConfig
from nascore.hookspecs import hookimpl
from nascore.loops import cosine_lr, set_lr
from nascore.protocols import Sampling
from nascore.strategy import SHARED, SearchContext, entropy, evaluate_arch, owners
from nascore.supernet import Decision

from .gumbel import ArchPass, GumbelSearch


class Temperature(BaseModel):
    """The Gumbel-softmax temperature: ``initial`` through the warm-up, then falling geometrically to ``final`` at
    the last epoch, whatever the number of epochs; or, with ``decay``, the paper's schedule: ``initial`` times
    exp(-``decay``) every epoch from the first."""

    model_config = ConfigDict(extra="forbid")
    initial: float = Field(5.0, gt=0)
    final: float | None = Field(None, gt=0, description=(
        "the temperature at the last epoch, reached geometrically from initial over the architecture epochs "
        "(0.5 unless decay is given)"))
    decay: float | None = Field(None, ge=0, description=(
        "the paper's schedule instead of final: the temperature multiplied by exp(-decay) every epoch (FBNet: "
        "0.045, which over its 90 epochs ends at 0.09, over a CPU-sized search of a few epochs near 5)"))

    @model_validator(mode="after")
    def _one_schedule(self) -> Temperature:
        if self.final is not None and self.decay is not None:
            raise ValueError("give decay (a factor per epoch) or final (the last epoch's temperature), not both")
        if self.decay is None and self.final is None:
            self.final = 0.5  # written back so: a resolved spec names its schedule and loads again as it is
        return self

    def at(self, epoch: int, warmup: int, epochs: int) -> float:
        """The temperature of ``epoch`` in a search of ``epochs`` epochs whose first ``warmup`` train weights only."""
        if self.decay is not None:
            return self.initial * math.exp(-self.decay * epoch)
        assert self.final is not None  # _one_schedule: final or decay
        searched = epochs - warmup - 1
        progress = 1.0 if searched <= 0 else min(max(epoch - warmup, 0) / searched, 1.0)
        return self.initial * (self.final / self.initial) ** progress


class WeightOptim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)


class ArchOptim(ArchPass):
    #: Adam's step on theta: a CPU-sized search takes tens of architecture steps (FBNet's 0.01 is for thousands)
    lr: float = Field(0.2, gt=0)
    weight_decay: float = Field(5e-4, ge=0)


class DNAS(GumbelSearch, Sampling):
    """FBNet's differentiable NAS: the paper's epochs (90, the first 10 weights only) and weight optimiser; the
    temperature schedule and architecture step sized for a CPU search (see the module's docstring)."""

    name: ClassVar[str] = "dnas"

    class Config(ComponentConfig):
        epochs: int = Field(90, ge=1)
        warmup_epochs: int = Field(10, ge=0)
        batch_size: int = Field(64, ge=1)
        arch_fraction: float = Field(0.2, gt=0, lt=1)
        temperature: Temperature = Temperature()
        weights: WeightOptim = WeightOptim()
        arch: ArchOptim = ArchOptim()
        #: steps per epoch cap for each pass (None = the whole split); for quick runs
        max_steps: int | None = Field(None, ge=1)
        #: training batches that re-estimate BatchNorm statistics before the derived arch is evaluated
        bn_batches: int = Field(8, ge=1)

        @property
        def warmup(self) -> int:
            return self.warmup_epochs

        @model_validator(mode="after")
        def _some_search(self) -> DNAS.Config:
            if self.warmup_epochs >= self.epochs:
                raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs}): "
                                 "warm-up epochs train weights only, the architecture is searched after them")
            return self

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        cfg = self.config
        self.w_opt = torch.optim.SGD(ctx.network.parameters(), lr=cfg.weights.lr, momentum=cfg.weights.momentum,
                                     weight_decay=cfg.weights.weight_decay)
        self.a_opt = torch.optim.Adam(self.theta.values(), lr=cfg.arch.lr, weight_decay=cfg.arch.weight_decay)
        distributed.average_gradients(self.a_opt)

    # -- one epoch ---------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        tau = cfg.temperature.at(epoch, cfg.warmup_epochs, cfg.epochs)
        set_lr(self.w_opt, cosine_lr(cfg.weights.lr, epoch, cfg.epochs))
        row: dict[str, Any] = {"temperature": tau, "lr": self.w_opt.param_groups[0]["lr"]}
        row.update(self._weight_pass(epoch, lambda noise: self._gumbel(tau, grad=False, noise=noise)))
        if epoch >= cfg.warmup_epochs:
            row.update(self._arch_pass(epoch, tau))  # one Gumbel sample drives the forward and the cost term
        row.update(self._distribution_stats())
        row.update(self._evaluate_derived(epoch))
        return row

    def _distribution_stats(self) -> dict[str, Any]:
        """Mean entropy and mean probability of the top choice per decision (1.0: the derived arch is the only
        one the distribution draws), and the top choices."""
        entropies, tops, top = [], [], {}
        for d in self.decisions:
            theta = self.theta[d.name].detach()
            entropies.append(float(entropy(theta)))
            tops.append(float(torch.softmax(theta.float(), 0).max()))
            top[d.name] = d.options[int(theta.argmax())]  # as derive() does
        return {"entropy": sum(entropies) / len(entropies), "top_probability": sum(tops) / len(tops),
                "top_choices": top}

    def _evaluate_derived(self, epoch: int) -> dict[str, float]:
        """Validation metrics of the current argmax arch(s), BatchNorm recalibrated on that path, and cost."""
        ctx, out, derived = self.ctx, {}, self.derive()
        background = {k: v for choices in derived.values() for k, v in choices.items()}  # other owners' decisions
        for owner, choices in derived.items():
            # every rank the same batches: alike BatchNorm statistics, so alike metrics on the whole validation set
            _, batches = self._batches(self.weight_set, epoch, stream=2, limit=self.config.bn_batches, shard=False)
            metrics = evaluate_arch(ctx, {**background, **choices}, owner, batches, self.config.batch_size)
            out.update({f"val/{k}": v for k, v in metrics.items()})
            if ctx.cost_table is not None:
                out[f"derived_cost{'' if owner is SHARED else '/' + owner}"] = \
                    ctx.cost_table.of_choices({**background, **choices})
        return out

    # -- results and state -------------------------------------------------------------------
    def derive(self) -> dict[str | None, dict[str, str]]:
        archs = {}
        for owner in owners(self.decisions):
            archs[owner] = {d.name: d.options[int(self.theta[d.name].detach().argmax())]
                            for d in self._decisions_of(owner)}
        return archs

    def _decisions_of(self, owner: str | None) -> list[Decision]:
        return [d for d in self.decisions if d.task is SHARED or d.task == owner]

    def sample(self, n: int, generator: torch.Generator) -> dict[str | None, list[dict[str, str]]]:
        """Each decision drawn independently from softmax(theta), ``n`` archs per owner."""
        probs = {d.name: torch.softmax(self.theta[d.name].detach(), 0).cpu() for d in self.decisions}
        archs = {}
        for owner in owners(self.decisions):
            archs[owner] = [{d.name: d.options[int(torch.multinomial(probs[d.name], 1, generator=generator))]
                             for d in self._decisions_of(owner)} for _ in range(n)]
        return archs


@hookimpl
def nascore_search_strategies():
    return [DNAS]
