"""What the differentiable strategies (``dnas``, ``bmtas``) share: one logit vector ``theta`` per decision, a soft
Gumbel-softmax mix drawn from it, the training split cut into a weight split and an architecture split, a
pass of weight steps over the one and a pass of architecture steps over the other. Under torchrun each pass runs
on the rank's share of its split; the Gumbel noise comes from a (seed, epoch, pass) stream, so every rank mixes the
supernet alike at every step; weight gradients are averaged by DDP, theta's by its optimiser (``a_opt``)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from nascore import distributed
from nascore.data import epoch_seed, loader, split
from nascore.loops import cosine_lr, set_lr, train_step
from nascore.protocols import Distributing
from nascore.strategy import SearchContext, SearchStrategy, owner_name


class ArchPass(BaseModel):
    """The architecture pass of each epoch after the warm-up, besides its optimiser (whose settings, ``lr`` among
    them, a subclass adds): how many steps it takes, and theta's learning rate over those epochs."""

    model_config = ConfigDict(extra="forbid")
    steps: int | None = Field(None, ge=1, description=(
        "architecture steps per epoch, at most one pass over the architecture split (default: max_steps, else "
        "the whole split)"))
    schedule: Literal["constant", "cosine"] = Field("constant", description=(
        "theta's learning rate over the epochs after the warm-up: lr throughout, or cosine from lr at the first "
        "(as the weights' lr falls over all epochs)"))


class GumbelSearch(SearchStrategy, Distributing):
    """Subclasses' ``Config`` has ``epochs``, ``warmup`` (the weights-only epochs), ``batch_size``,
    ``arch_fraction``, ``max_steps`` and ``arch`` (an :class:`ArchPass` with ``lr``); their ``setup`` creates the
    optimisers ``w_opt`` (network weights) and ``a_opt`` (``theta``, its gradients averaged over the ranks:
    ``distributed.average_gradients``)."""

    #: random streams (``data.epoch_seed``) of the Gumbel noise of the weight and the architecture passes
    WEIGHT_NOISE, ARCH_NOISE = 3, 4

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        self.decisions = ctx.supernet.decisions()
        self.theta = {d.name: torch.zeros(len(d.options), device=ctx.parts.device, requires_grad=True)
                      for d in self.decisions}
        self.weight_set, self.arch_set = split(ctx.parts.train_set, self.config.arch_fraction, ctx.parts.seed)
        # a sampled path (one-hot mixes, softmax weights that underflow to 0) leaves weights out of a forward
        self.weight_net = distributed.wrap(ctx.network, find_unused_parameters=True)

    def _noise(self, epoch: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(epoch_seed(self.ctx.parts.seed, epoch, stream))

    def _gumbel(self, tau: float, grad: bool, noise: torch.Generator) -> dict[str, Tensor]:
        """A soft mix of every decision, drawn by Gumbel-softmax from ``theta`` at temperature ``tau`` with the
        next Gumbel noise of ``noise``."""
        mix = {}
        for n, t in self.theta.items():
            gumbels = -torch.empty(t.shape).exponential_(generator=noise).log().to(t.device)
            mix[n] = torch.softmax(((t if grad else t.detach()) + gumbels) / tau, 0)
        return mix

    def _batches(self, dataset, epoch: int, stream: int, limit: int | None = None, shard: bool = True
                 ) -> tuple[int, Iterator]:
        parts = self.ctx.parts
        batches = loader(dataset, self.config.batch_size, parts.collate, shuffle=True, seed=parts.seed, epoch=epoch,
                         stream=stream, shard=shard)
        limit = min(limit or self.config.max_steps or len(batches), len(batches))
        return limit, (b for _, b in zip(range(limit), batches))

    def _weight_pass(self, epoch: int, mix: Callable[[torch.Generator], Mapping[str, Tensor]]) -> dict[str, float]:
        """Weight steps over the weight split, the supernet mixed by ``mix(noise)`` at each step."""
        ctx = self.ctx
        net = self.weight_net.train()
        noise = self._noise(epoch, self.WEIGHT_NOISE)
        total, batches = self._batches(self.weight_set, epoch, stream=0)
        w_loss, step = 0.0, 0
        with ctx.progress(total, f"search epoch {epoch} ({epoch + 1}/{self.config.epochs}) weights") as advance:
            for step, (images, targets) in enumerate(batches):
                ctx.supernet.set_mix(mix(noise))
                loss, _ = train_step(net, images, targets, ctx.parts.tasks, self.w_opt, ctx.parts.device, epoch, step,
                                     precision=ctx.precision)
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
        ctx, cfg = self.ctx, self.config
        ctx.network.train()  # not through DDP: the backward reaches theta only
        set_lr(self.a_opt, self.arch_lr(epoch))
        noise = self._noise(epoch, self.ARCH_NOISE)
        total, batches = self._batches(self.arch_set, epoch, stream=1, limit=cfg.arch.steps)
        costed = ctx.cost_table is not None and ctx.objective is not None
        sums = {"arch_loss": 0.0, "task_loss": 0.0} | ({"expected_cost": 0.0} if costed else {})
        step = 0
        with ctx.progress(total, f"search epoch {epoch} ({epoch + 1}/{cfg.epochs}) arch") as advance:
            for step, (images, targets) in enumerate(batches):
                mix = self._gumbel(tau, grad=True, noise=noise)
                ctx.supernet.set_mix(mix)
                terms: dict[str, Tensor] = {}
                # no weight gradients: this pass leaves them
                loss, _ = train_step(ctx.network, images, targets, ctx.parts.tasks, self.a_opt, ctx.parts.device,
                                     epoch, step, partial(self._arch_loss, mix, terms),
                                     inputs=list(self.theta.values()), precision=ctx.precision)
                if costed:
                    sums["expected_cost"] += terms["expected_cost"].item()
                sums["arch_loss"] += loss.item()
                sums["task_loss"] += terms["task_loss"].item()
                advance()
        return {"arch_lr": self.a_opt.param_groups[0]["lr"], "arch_steps": step + 1} | \
            {k: v / (step + 1) for k, v in sums.items()}

    def arch_lr(self, epoch: int) -> float:
        """Theta's learning rate in ``epoch`` (after the warm-up): ``arch.lr``, or its cosine over those epochs."""
        cfg = self.config
        if cfg.arch.schedule == "constant":
            return cfg.arch.lr
        return cosine_lr(cfg.arch.lr, epoch - cfg.warmup, cfg.epochs - cfg.warmup)

    def distributions(self) -> dict[str, dict[str, list[float]]]:
        """softmax(theta) of every decision, grouped by the arch the decision belongs to (``owner_name``)."""
        groups: dict[str, dict[str, list[float]]] = {}
        for d in self.decisions:
            probs = torch.softmax(self.theta[d.name].detach().float(), 0).cpu().tolist()
            groups.setdefault(owner_name(d.task), {})[d.name] = probs
        return groups

    def state_dict(self) -> dict[str, Any]:
        return {"theta": {k: v.detach().cpu() for k, v in self.theta.items()},
                "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, v in state["theta"].items():
                self.theta[k].copy_(v)
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
