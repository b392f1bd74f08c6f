"""DNAS (FBNet): Gumbel-softmax over every decision, weights on 80% of the training split alternating
with architecture steps (Adam) on the other 20%, a temperature that decays per epoch."""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..component import ComponentConfig
from ..data import loader, split, to_device
from ..hookspecs import hookimpl
from ..loops import check_finite, cosine_lr, set_lr, task_losses
from ..strategy import SearchContext, SearchStrategy, evaluate_arch, owners
from ..supernet import Decision


class Temperature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    initial: float = Field(5.0, gt=0)
    #: the temperature is multiplied by exp(-decay) every epoch
    decay: float = Field(0.045, ge=0)

    def at(self, epoch: int) -> float:
        return self.initial * math.exp(-self.decay * epoch)


class WeightOptim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)


class ArchOptim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(5e-4, ge=0)


class DNAS(SearchStrategy):
    """FBNet's differentiable NAS; defaults follow the paper (90 epochs, the first 10 weights only)."""

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

        @model_validator(mode="after")
        def _some_search(self) -> DNAS.Config:
            if self.warmup_epochs >= self.epochs:
                raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs}): "
                                 "warm-up epochs train weights only, the architecture is searched after them")
            return self

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        cfg = self.config
        self.decisions = ctx.supernet.decisions()
        self.theta = {d.name: torch.zeros(len(d.options), device=ctx.device, requires_grad=True)
                      for d in self.decisions}
        self.weight_set, self.arch_set = split(ctx.train_set, cfg.arch_fraction, ctx.seed)
        self.w_opt = torch.optim.SGD(ctx.network.parameters(), lr=cfg.weights.lr, momentum=cfg.weights.momentum,
                                     weight_decay=cfg.weights.weight_decay)
        self.a_opt = torch.optim.Adam(self.theta.values(), lr=cfg.arch.lr, weight_decay=cfg.arch.weight_decay)

    # -- one epoch ---------------------------------------------------------------------------
    def _gumbel(self, tau: float, grad: bool) -> dict[str, torch.Tensor]:
        return {n: F.gumbel_softmax(t if grad else t.detach(), tau=tau, hard=False) for n, t in self.theta.items()}

    def _batches(self, dataset, epoch: int, stream: int, limit: int | None = None):
        batches = loader(dataset, self.config.batch_size, self.ctx.collate, shuffle=True, seed=self.ctx.seed,
                         epoch=epoch, stream=stream)
        limit = min(limit or self.config.max_steps or len(batches), len(batches))
        return limit, (b for _, b in zip(range(limit), batches))

    def _progress(self, total: int, desc: str):
        return self.ctx.progress(total, desc) if self.ctx.progress else nullcontext(lambda: None)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        ctx, cfg = self.ctx, self.config
        tau = cfg.temperature.at(epoch)
        net = ctx.network.train()
        set_lr(self.w_opt, cosine_lr(cfg.weights.lr, epoch, cfg.epochs))
        row: dict[str, Any] = {"temperature": tau, "lr": self.w_opt.param_groups[0]["lr"]}

        total, batches = self._batches(self.weight_set, epoch, stream=0)
        w_loss, step = 0.0, 0
        with self._progress(total, f"search {epoch + 1}/{cfg.epochs} weights") as advance:
            for step, (images, targets) in enumerate(batches):
                images, targets = to_device(images, ctx.device), to_device(targets, ctx.device)
                ctx.supernet.set_weights(self._gumbel(tau, grad=False))
                loss = sum(task_losses(net(images), targets, ctx.tasks).values())
                check_finite(loss, epoch, step)
                self.w_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.w_opt.step()
                w_loss += loss.item()
                advance()
        row["weight_loss"] = w_loss / (step + 1)

        if epoch >= cfg.warmup_epochs:
            row.update(self._arch_pass(epoch, tau))
        row.update(self._distribution_stats())
        row.update(self._evaluate_derived(epoch))
        return row

    def _arch_pass(self, epoch: int, tau: float) -> dict[str, float]:
        ctx = self.ctx
        total, batches = self._batches(self.arch_set, epoch, stream=1)
        sums = {"arch_loss": 0.0, "task_loss": 0.0, "expected_cost": 0.0}
        step = 0
        with self._progress(total, f"search {epoch + 1}/{self.config.epochs} arch") as advance:
            for step, (images, targets) in enumerate(batches):
                images, targets = to_device(images, ctx.device), to_device(targets, ctx.device)
                weights = self._gumbel(tau, grad=True)  # one sample drives the forward and the cost term
                ctx.supernet.set_weights(weights)
                task_loss = sum(task_losses(ctx.network(images), targets, ctx.tasks).values())
                loss = task_loss
                if ctx.cost_table is not None and ctx.objective is not None:
                    cost = ctx.cost_table.expected(weights)
                    loss = ctx.objective(task_loss, cost)
                    sums["expected_cost"] += cost.item()
                check_finite(loss, epoch, step)
                self.a_opt.zero_grad(set_to_none=True)
                loss.backward(inputs=list(self.theta.values()))  # no weight gradients: this pass leaves them
                self.a_opt.step()
                sums["arch_loss"] += loss.item()
                sums["task_loss"] += task_loss.item()
                advance()
        return {k: v / (step + 1) for k, v in sums.items() if k != "expected_cost" or ctx.cost_table is not None}

    def _distribution_stats(self) -> dict[str, Any]:
        entropies, top = [], {}
        for d in self.decisions:
            p = torch.softmax(self.theta[d.name].detach(), 0)
            entropies.append(float(-(p * p.clamp_min(1e-12).log()).sum()))
            top[d.name] = d.options[int(self.theta[d.name].detach().argmax())]  # as derive() does
        return {"entropy": sum(entropies) / len(entropies), "top_choices": top}

    def _evaluate_derived(self, epoch: int) -> dict[str, float]:
        """Validation metrics of the current argmax arch(s), BatchNorm recalibrated on that path, and cost."""
        ctx, out, derived = self.ctx, {}, self.derive()
        background = {k: v for choices in derived.values() for k, v in choices.items()}  # other owners' decisions
        for owner, choices in derived.items():
            _, batches = self._batches(self.weight_set, epoch, stream=2, limit=self.config.bn_batches)
            metrics = evaluate_arch(ctx, {**background, **choices}, owner, batches, self.config.batch_size)
            out.update({f"val/{k}": v for k, v in metrics.items()})
            if ctx.cost_table is not None:
                out[f"derived_cost{'' if owner is None else '/' + owner}"] = \
                    ctx.cost_table.of_choices({**background, **choices}, self.decisions)
        return out

    # -- results and state -------------------------------------------------------------------
    def derive(self) -> dict[str | None, dict[str, str]]:
        archs = {}
        for owner in owners(self.decisions):
            archs[owner] = {d.name: d.options[int(self.theta[d.name].detach().argmax())]
                            for d in self._decisions_of(owner)}
        return archs

    def _decisions_of(self, owner: str | None) -> list[Decision]:
        return [d for d in self.decisions if d.task is None or d.task == owner]

    def sample(self, n: int, generator: torch.Generator) -> dict[str | None, list[dict[str, str]]]:
        """Each decision drawn independently from softmax(theta), ``n`` archs per owner."""
        probs = {d.name: torch.softmax(self.theta[d.name].detach(), 0).cpu() for d in self.decisions}
        archs = {}
        for owner in owners(self.decisions):
            archs[owner] = [{d.name: d.options[int(torch.multinomial(probs[d.name], 1, generator=generator))]
                             for d in self._decisions_of(owner)} for _ in range(n)]
        return archs

    def state_dict(self) -> dict[str, Any]:
        return {"theta": {k: v.detach().cpu() for k, v in self.theta.items()},
                "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, v in state["theta"].items():
                self.theta[k].copy_(v)
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])


@hookimpl
def nascore_search_strategies():
    return [DNAS]
