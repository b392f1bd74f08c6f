"""What the differentiable strategies (``dnas``, ``bmtas``) share: one logit vector ``theta`` per decision, a soft
Gumbel-softmax mix drawn from it, the training split cut into a weight split and an architecture split, a
pass of weight steps over the one and a pass of architecture steps over the other."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import loader, split
from ..loops import train_step
from ..strategy import SearchContext, SearchStrategy


class GumbelSearch(SearchStrategy):
    """Subclasses' ``Config`` has ``batch_size``, ``arch_fraction`` and ``max_steps``; their ``setup`` creates the
    optimisers ``w_opt`` (network weights) and ``a_opt`` (``theta``)."""

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        self.decisions = ctx.supernet.decisions()
        self.theta = {d.name: torch.zeros(len(d.options), device=ctx.device, requires_grad=True)
                      for d in self.decisions}
        self.weight_set, self.arch_set = split(ctx.train_set, self.config.arch_fraction, ctx.seed)

    def _gumbel(self, tau: float, grad: bool) -> dict[str, Tensor]:
        """A soft mix of every decision, drawn by Gumbel-softmax from ``theta`` at temperature ``tau``."""
        return {n: F.gumbel_softmax(t if grad else t.detach(), tau=tau, hard=False) for n, t in self.theta.items()}

    def _batches(self, dataset, epoch: int, stream: int, limit: int | None = None) -> tuple[int, Iterator]:
        batches = loader(dataset, self.config.batch_size, self.ctx.collate, shuffle=True, seed=self.ctx.seed,
                         epoch=epoch, stream=stream)
        limit = min(limit or self.config.max_steps or len(batches), len(batches))
        return limit, (b for _, b in zip(range(limit), batches))

    def _weight_pass(self, epoch: int, mix: Callable[[], Mapping[str, Tensor]]) -> dict[str, float]:
        """Weight steps over the weight split, the supernet mixed by ``mix()`` at each step."""
        ctx = self.ctx
        net = ctx.network.train()
        total, batches = self._batches(self.weight_set, epoch, stream=0)
        w_loss, step = 0.0, 0
        with ctx.progress(total, f"search epoch {epoch} ({epoch + 1}/{self.config.epochs}) weights") as advance:
            for step, (images, targets) in enumerate(batches):
                ctx.supernet.set_mix(mix())
                loss, _ = train_step(net, images, targets, ctx.tasks, self.w_opt, ctx.device, epoch, step)
                w_loss += loss.item()
                advance()
        return {"weight_loss": w_loss / (step + 1)}

    def _resource(self, mix: Mapping[str, Tensor]) -> Tensor:
        """The cost term of an architecture step whose forward ran on ``mix``: its expected cost."""
        return self.ctx.cost_table.expected(mix)

    def _arch_loss(self, mix: Mapping[str, Tensor], terms: dict[str, Tensor], losses: dict[str, Tensor]
                   ) -> Tensor:
        """The loss of an architecture step from its task losses (after the forward on ``mix``): their sum,
        combined with ``_resource(mix)`` by the spec's objective when the search has a cost; the sum and the
        cost are kept in ``terms`` ("task_loss", "expected_cost")."""
        ctx = self.ctx
        terms["task_loss"] = sum(losses.values())
        if ctx.cost_table is None or ctx.objective is None:
            return terms["task_loss"]
        terms["expected_cost"] = self._resource(mix)
        return ctx.objective(terms["task_loss"], terms["expected_cost"])

    def _arch_pass(self, epoch: int, tau: float) -> dict[str, float]:
        """Architecture steps over the architecture split: one Gumbel sample per step drives the forward, the
        task losses and ``_resource`` are combined by the spec's objective, only ``theta`` is updated."""
        ctx = self.ctx
        ctx.network.train()
        total, batches = self._batches(self.arch_set, epoch, stream=1)
        costed = ctx.cost_table is not None and ctx.objective is not None
        sums = {"arch_loss": 0.0, "task_loss": 0.0} | ({"expected_cost": 0.0} if costed else {})
        step = 0
        with ctx.progress(total, f"search epoch {epoch} ({epoch + 1}/{self.config.epochs}) arch") as advance:
            for step, (images, targets) in enumerate(batches):
                mix = self._gumbel(tau, grad=True)
                ctx.supernet.set_mix(mix)
                terms: dict[str, Tensor] = {}
                # no weight gradients: this pass leaves them
                loss, _ = train_step(ctx.network, images, targets, ctx.tasks, self.a_opt, ctx.device, epoch, step,
                                     partial(self._arch_loss, mix, terms), inputs=list(self.theta.values()))
                if costed:
                    sums["expected_cost"] += terms["expected_cost"].item()
                sums["arch_loss"] += loss.item()
                sums["task_loss"] += terms["task_loss"].item()
                advance()
        return {k: v / (step + 1) for k, v in sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"theta": {k: v.detach().cpu() for k, v in self.theta.items()},
                "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, v in state["theta"].items():
                self.theta[k].copy_(v)
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
