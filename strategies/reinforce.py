"""REINFORCE with importance sampling (FBNetV5): one policy per task over the supernet's decisions; each step
draws one architecture from a proposal ``q`` (the mixture of the task policies), runs one forward and one
backward that produce every task's loss, and scales task t's loss and policy gradient by the arch's importance
for task t, ``p_t(a) / q(a)``, so the cost of a step does not grow with the number of tasks while every task's
estimate stays unbiased. Under torchrun every rank draws the same arch (one generator, seeded alike, drawn once per
step), steps its weights (DDP) on its share of the batch, and rewards the policies with the task losses averaged over
the ranks: every rank takes the same policy step.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from nascore import distributed
from nascore.component import ComponentConfig
from nascore.data import loader
from nascore.hookspecs import hookimpl
from nascore.loops import cosine_lr, set_lr, train_step
from nascore.protocols import Distributing, Sampling
from nascore.strategy import SearchContext, SearchStrategy, entropy, evaluate_arch
from nascore.supernet import Decision

from .dnas import WeightOptim


class PolicyOptim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.01, gt=0)
    #: coefficient of each policy's entropy in its objective (exploration)
    entropy: float = Field(0.0, ge=0)
    #: moving-average factor of each task's reward baseline
    baseline_decay: float = Field(0.9, ge=0, lt=1)


class Policies:
    """Independent categorical policies, one per task, over the same decisions (logits ``theta[t][d]``)."""

    def __init__(self, tasks: list[str], decisions: list[Decision], device: torch.device | str = "cpu"):
        self.tasks, self.decisions = tasks, decisions
        self.theta = {t: {d.name: torch.zeros(len(d.options), device=device, requires_grad=True) for d in decisions}
                      for t in tasks}

    def parameters(self) -> list[Tensor]:
        return [p for per_task in self.theta.values() for p in per_task.values()]

    def log_prob(self, task: str, arch: dict[str, int]) -> Tensor:
        """``log p_t(a)`` (differentiable in task t's logits)."""
        return sum(F.log_softmax(self.theta[task][name], 0)[i] for name, i in arch.items())

    def sample(self, generator: torch.Generator) -> dict[str, int]:
        """One arch from the proposal ``q = mean_t p_t``: a task uniformly, then its policy."""
        task = self.tasks[int(torch.randint(len(self.tasks), (1,), generator=generator))]
        return self.sample_from(task, generator)

    def sample_from(self, task: str, generator: torch.Generator) -> dict[str, int]:
        return {name: int(torch.multinomial(F.softmax(logits.detach(), 0).cpu(), 1, generator=generator))
                for name, logits in self.theta[task].items()}

    def importance(self, arch: dict[str, int]) -> dict[str, float]:
        """The importance of ``arch`` per task, ``p_t(a) / q(a)``, with ``q`` the uniform mixture of the policies."""
        with torch.no_grad():
            log_p = torch.stack([self.log_prob(t, arch) for t in self.tasks])
            log_q = torch.logsumexp(log_p, 0) - math.log(len(self.tasks))
            return dict(zip(self.tasks, torch.exp(log_p - log_q).tolist()))

    def entropy(self, task: str) -> Tensor:
        return sum(entropy(v) for v in self.theta[task].values())

    def argmax(self, task: str) -> dict[str, str]:
        return {d.name: d.options[int(self.theta[task][d.name].detach().argmax())] for d in self.decisions}

    def labels(self, arch: dict[str, int]) -> dict[str, str]:
        return {d.name: d.options[arch[d.name]] for d in self.decisions}


def policy_loss(policies: Policies, arch: dict[str, int], advantages: dict[str, float],
                importance: dict[str, float], entropy: float) -> Tensor:
    """Minus the REINFORCE objective: ``-sum_t w_t * A_t * log p_t(a) - entropy * H(p_t)``, ``w_t`` the arch's
    importance for task t."""
    return sum(-importance[t] * advantages[t] * policies.log_prob(t, arch) - entropy * policies.entropy(t)
               for t in policies.tasks)


class Reinforce(SearchStrategy, Sampling, Distributing):
    """FBNetV5's search: per-task policies, one importance-sampled architecture and one pass per step."""

    name: ClassVar[str] = "reinforce"

    class Config(ComponentConfig):
        epochs: int = Field(30, ge=1)
        #: epochs that train the supernet's weights on archs from the (uniform) policies before they learn
        warmup_epochs: int = Field(5, ge=0)
        batch_size: int = Field(64, ge=1)
        weights: WeightOptim = WeightOptim()
        policy: PolicyOptim = PolicyOptim()
        #: steps per epoch cap (None = the whole training split); for quick runs
        max_steps: int | None = Field(None, ge=1)
        #: training batches that re-estimate BatchNorm statistics before a derived arch is evaluated
        bn_batches: int = Field(8, ge=1)

    def setup(self, ctx: SearchContext) -> None:
        super().setup(ctx)
        cfg = self.config
        self.decisions = ctx.supernet.decisions()
        self.tasks = [t.name for t in ctx.parts.tasks]
        self.policies = Policies(self.tasks, self.decisions, ctx.parts.device)
        self.baselines: dict[str, float | None] = {t: None for t in self.tasks}
        self.w_opt = torch.optim.SGD(ctx.network.parameters(), lr=cfg.weights.lr, momentum=cfg.weights.momentum,
                                     weight_decay=cfg.weights.weight_decay)
        self.p_opt = torch.optim.Adam(self.policies.parameters(), lr=cfg.policy.lr)
        # a sampled path leaves weights out of the forward
        self.weight_net = distributed.wrap(ctx.network, find_unused_parameters=True)
        self.generator = torch.Generator().manual_seed(ctx.parts.seed)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        ctx, cfg = self.ctx, self.config
        ctx.network.train()
        set_lr(self.w_opt, cosine_lr(cfg.weights.lr, epoch, cfg.epochs))
        batches = loader(ctx.parts.train_set, cfg.batch_size, ctx.parts.collate, shuffle=True, seed=ctx.parts.seed,
                         epoch=epoch, shard=True)
        total = min(cfg.max_steps or len(batches), len(batches))
        learn = epoch >= cfg.warmup_epochs
        sums = {f"loss/{t}": 0.0 for t in self.tasks} | {"cost": 0.0}
        step = 0
        label = f"search epoch {epoch} ({epoch + 1}/{cfg.epochs})"
        with ctx.progress(total, label) as advance:
            for step, (images, targets) in zip(range(total), batches):
                losses, cost = self.step(images, targets, learn, epoch, step)
                for t in self.tasks:
                    sums[f"loss/{t}"] += losses[t]
                sums["cost"] += cost or 0.0
                advance()
        row: dict[str, Any] = {k: v / (step + 1) for k, v in sums.items()
                               if k != "cost" or ctx.cost_table is not None}
        row["lr"] = self.w_opt.param_groups[0]["lr"]
        for t in self.tasks:
            row[f"entropy/{t}"] = self.policies.entropy(t).item() / max(len(self.decisions), 1)
        row.update(self._evaluate_derived(epoch))
        return row

    def step(self, images: Any, targets: Any, learn: bool, epoch: int = 0, step: int = 0
             ) -> tuple[dict[str, float], float | None]:
        """One search step: draw an arch from ``q``, one forward/backward for every task's loss scaled by its
        importance, a weight step, then (when ``learn``) a policy step; returns the task losses and the arch's
        cost."""
        ctx = self.ctx
        arch = self.policies.sample(self.generator)
        choices = self.policies.labels(arch)
        importance = self.policies.importance(arch)
        ctx.supernet.set_choices(choices)
        # task t's loss scaled by its importance w_t = p_t(a) / q(a): unbiased per task, E_q[w_t l_t] = E_p_t[l_t]
        _, losses = train_step(self.weight_net, images, targets, ctx.parts.tasks, self.w_opt, ctx.parts.device, epoch,
                               step, lambda by_task: sum(importance[t] * by_task[t] for t in self.tasks),
                               precision=ctx.precision)
        cost = ctx.cost_table.of_choices(choices) if ctx.cost_table is not None else None
        if learn:
            self._policy_step(arch, losses, importance, cost)
        return {t: losses[t].item() for t in self.tasks}, cost

    def _policy_step(self, arch: dict[str, int], losses: dict[str, Tensor], importance: dict[str, float],
                     cost: float | None) -> None:
        """Rewards ``-objective(loss_t, cost)`` (``-loss_t`` without a cost), minus a moving-average baseline."""
        ctx, decay = self.ctx, self.config.policy.baseline_decay
        global_losses = dict(zip(self.tasks, distributed.mean(torch.stack([losses[t] for t in self.tasks]))))
        advantages = {}
        for t in self.tasks:
            loss = global_losses[t]
            if cost is not None and ctx.objective is not None:
                loss = ctx.objective(loss, torch.tensor(cost, device=loss.device))
            reward = -float(loss)
            base = self.baselines[t]
            advantages[t] = 0.0 if base is None else reward - base
            self.baselines[t] = reward if base is None else decay * base + (1 - decay) * reward
        self.p_opt.zero_grad(set_to_none=True)
        policy_loss(self.policies, arch, advantages, importance, self.config.policy.entropy).backward()
        self.p_opt.step()

    def _evaluate_derived(self, epoch: int) -> dict[str, float]:
        ctx, out = self.ctx, {}
        for task, choices in self.derive().items():
            # every rank the same batches: alike BatchNorm statistics, so alike metrics on the whole validation set
            batches = loader(ctx.parts.train_set, self.config.batch_size, ctx.parts.collate, shuffle=True,
                             seed=ctx.parts.seed, epoch=epoch, stream=2)
            bn = (b for _, b in zip(range(self.config.bn_batches), batches))
            out.update({f"val/{k}": v for k, v in evaluate_arch(ctx, choices, task, bn, self.config.batch_size)
                        .items()})
            if ctx.cost_table is not None:
                out[f"derived_cost/{task}"] = ctx.cost_table.of_choices(choices)
        return out

    # -- results and state -------------------------------------------------------------------
    def derive(self) -> dict[str | None, dict[str, str]]:
        return {t: self.policies.argmax(t) for t in self.tasks}

    def distributions(self) -> dict[str, dict[str, list[float]]]:
        """Each task's policy: softmax of its logits per decision."""
        return {t: {name: F.softmax(logits.detach().float(), 0).cpu().tolist()
                    for name, logits in self.policies.theta[t].items()} for t in self.tasks}

    def sample(self, n: int, generator: torch.Generator) -> dict[str | None, list[dict[str, str]]]:
        return {t: [self.policies.labels(self.policies.sample_from(t, generator)) for _ in range(n)]
                for t in self.tasks}

    def state_dict(self) -> dict[str, Any]:
        return {"theta": {t: {k: v.detach().cpu() for k, v in per.items()} for t, per in self.policies.theta.items()},
                "baselines": dict(self.baselines), "generator": self.generator.get_state(),
                "w_opt": self.w_opt.state_dict(), "p_opt": self.p_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for t, per in state["theta"].items():
                for k, v in per.items():
                    self.policies.theta[t][k].copy_(v)
        self.baselines = dict(state["baselines"])
        self.generator.set_state(state["generator"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.p_opt.load_state_dict(state["p_opt"])


@hookimpl
def nascore_search_strategies():
    return [Reinforce]
