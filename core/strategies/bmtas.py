"""BMTAS (Bruggemann et al., BMVC 2020): searches where tasks share layers and where they branch, on the
``branched`` space. Defaults follow the public reference code: Gumbel-softmax (soft, one sample per layer and
task per step); a warm-up of 1/20 of the epochs with every task on its own copy; then the temperature falls
linearly from 5.0 to 0.1; per epoch an architecture pass on 20% of the training split (Adam, lr 1e-2, weight
decay 5e-5, its state reset every epoch, BatchNorm on batch statistics) and a weight pass on the other 80%
(Adam, lr 1e-3, weight decay 1e-4, state reset after each architecture pass, BatchNorm statistics re-estimated);
resource loss = the exact expected cost of the branched encoder under softmax(alpha), combined with the task
losses by the spec's ``cost.loss`` (BMTAS: ``form: additive``).
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..branching import canonical, choices_of, config_of
from ..component import ComponentConfig
from ..data import loader, split, to_device
from ..errors import NascoreError
from ..hookspecs import hookimpl
from ..loops import check_finite, task_losses
from ..strategy import SearchContext, SearchStrategy, evaluate_arch


class LinearTemperature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    initial: float = Field(5.0, gt=0)
    final: float = Field(0.1, gt=0)


class WeightAdam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)


class ArchAdam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(5e-5, ge=0)


class BMTAS(SearchStrategy):
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
        super().setup(ctx)
        net = ctx.supernet
        if not hasattr(net, "layer_names") or not hasattr(net, "tasks"):
            raise NascoreError("strategy 'bmtas' searches the 'branched' space (space: {name: branched, backbone: "
                               f"...}}); space '{type(net).__name__}' has no branch decisions")
        cfg = self.config
        self.decisions = net.decisions()
        self.alpha = {d.name: torch.zeros(len(d.options), device=ctx.device, requires_grad=True)
                      for d in self.decisions}
        # warm-up: task t on copy t
        self.own = {d.name: torch.eye(len(net.tasks), device=ctx.device)[net.tasks.index(d.name.rsplit(".", 1)[1])]
                    for d in self.decisions}
        self.weight_set, self.arch_set = split(ctx.train_set, cfg.arch_fraction, ctx.seed)
        self.w_opt = torch.optim.Adam(ctx.network.parameters(), lr=cfg.weights.lr,
                                      weight_decay=cfg.weights.weight_decay)
        self.a_opt = torch.optim.Adam(self.alpha.values(), lr=cfg.arch.lr, weight_decay=cfg.arch.weight_decay)

    # -- one epoch ---------------------------------------------------------------------------
    def _gumbel(self, tau: float, grad: bool) -> dict[str, torch.Tensor]:
        return {n: F.gumbel_softmax(a if grad else a.detach(), tau=tau, hard=False) for n, a in self.alpha.items()}

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {n: torch.softmax(a, 0) for n, a in self.alpha.items()}

    def _batches(self, dataset, epoch: int, stream: int, limit: int | None = None):
        batches = loader(dataset, self.config.batch_size, self.ctx.collate, shuffle=True, seed=self.ctx.seed,
                         epoch=epoch, stream=stream)
        limit = min(limit or self.config.max_steps or len(batches), len(batches))
        return limit, (b for _, b in zip(range(limit), batches))

    def _progress(self, total: int, desc: str):
        return self.ctx.progress(total, desc) if self.ctx.progress else nullcontext(lambda: None)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        warm = epoch < cfg.warmup
        tau = cfg.temperature_at(epoch)
        row: dict[str, Any] = {"temperature": tau, "warmup": warm}
        if not warm:
            row.update(self._arch_pass(epoch, tau))
        row.update(self._weight_pass(epoch, tau, warm))
        row.update(self._distribution_stats())
        row.update(self._evaluate_derived(epoch))
        return row

    def _norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.ctx.supernet.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _arch_pass(self, epoch: int, tau: float) -> dict[str, float]:
        ctx = self.ctx
        ctx.network.train()
        self.a_opt.state = defaultdict(dict)  # the reference restarts Adam's moments every epoch
        for m in self._norms():  # batch statistics only: the running ones would mix architectures
            m.track_running_stats = False
        total, batches = self._batches(self.arch_set, epoch, stream=1)
        sums = {"arch_loss": 0.0, "task_loss": 0.0}
        step = 0
        with self._progress(total, f"search {epoch + 1}/{self.config.epochs} arch") as advance:
            for step, (images, targets) in enumerate(batches):
                images, targets = to_device(images, ctx.device), to_device(targets, ctx.device)
                ctx.supernet.set_weights(self._gumbel(tau, grad=True))
                task_loss = sum(task_losses(ctx.network(images), targets, ctx.tasks).values())
                loss = task_loss
                if ctx.cost_table is not None and ctx.objective is not None:
                    loss = ctx.objective(task_loss, ctx.cost_table.expected(self.probabilities()))
                check_finite(loss, epoch, step)
                self.a_opt.zero_grad(set_to_none=True)
                loss.backward(inputs=list(self.alpha.values()))  # no weight gradients: this pass leaves them
                self.a_opt.step()
                sums["arch_loss"] += loss.item()
                sums["task_loss"] += task_loss.item()
                advance()
        self.w_opt.state = defaultdict(dict)  # the architecture changed: restart the weights' Adam moments
        for m in self._norms():
            m.track_running_stats = True
            m.reset_running_stats()
        return {k: v / (step + 1) for k, v in sums.items()}

    def _weight_pass(self, epoch: int, tau: float, warm: bool) -> dict[str, float]:
        ctx = self.ctx
        net = ctx.network.train()
        total, batches = self._batches(self.weight_set, epoch, stream=0)
        w_loss, step = 0.0, 0
        with self._progress(total, f"search {epoch + 1}/{self.config.epochs} weights") as advance:
            for step, (images, targets) in enumerate(batches):
                images, targets = to_device(images, ctx.device), to_device(targets, ctx.device)
                ctx.supernet.set_weights(self.own if warm else self._gumbel(tau, grad=False))
                loss = sum(task_losses(net(images), targets, ctx.tasks).values())
                check_finite(loss, epoch, step)
                self.w_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.w_opt.step()
                w_loss += loss.item()
                advance()
        return {"weight_loss": w_loss / (step + 1)}

    def _distribution_stats(self) -> dict[str, Any]:
        probs = {n: p.detach() for n, p in self.probabilities().items()}
        entropy = sum(float(-(p * p.clamp_min(1e-12).log()).sum()) for p in probs.values()) / len(probs)
        row: dict[str, Any] = {"entropy": entropy}
        if self.ctx.cost_table is not None:
            row["expected_cost"] = float(self.ctx.cost_table.expected(probs))
        return row

    def _evaluate_derived(self, epoch: int) -> dict[str, Any]:
        ctx, choices = self.ctx, self.derive()[None]
        _, batches = self._batches(self.weight_set, epoch, stream=2, limit=self.config.bn_batches)
        out: dict[str, Any] = {f"val/{k}": v for k, v in
                               evaluate_arch(ctx, choices, None, batches, self.config.batch_size).items()}
        if ctx.cost_table is not None:
            out["derived_cost"] = ctx.cost_table.of_choices(choices)
        return out

    # -- results and state -------------------------------------------------------------------
    def _canonical(self, choices: dict[str, str]) -> dict[str, str]:
        layers, tasks = self.ctx.supernet.layer_names, self.ctx.supernet.tasks
        return choices_of(canonical(config_of(choices, layers, tasks)), layers, tasks)

    def derive(self) -> dict[str | None, dict[str, str]]:
        """Each task's most likely copy per layer, as a tree (tasks share a layer only if they share the one
        before), copies renumbered so that equal numbers mean shared."""
        return {None: self._canonical({d.name: d.options[int(self.alpha[d.name].detach().argmax())]
                                       for d in self.decisions})}

    def sample(self, n: int, generator: torch.Generator) -> dict[str | None, list[dict[str, str]]]:
        probs = {n_: p.detach().cpu() for n_, p in self.probabilities().items()}
        return {None: [self._canonical({d.name: d.options[int(torch.multinomial(probs[d.name], 1,
                                                                                 generator=generator))]
                                        for d in self.decisions}) for _ in range(n)]}

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": {k: v.detach().cpu() for k, v in self.alpha.items()},
                "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, v in state["alpha"].items():
                self.alpha[k].copy_(v)
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])


@hookimpl
def nascore_search_strategies():
    return [BMTAS]
