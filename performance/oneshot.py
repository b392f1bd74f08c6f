"""One-shot supernet training, shared by ``bench supernet-rank`` and ``bench pseudo-label``: a space's supernet trained
on one task, each step on paths a sampling rule chooses, checkpointed per epoch and resumed.

The rules (:class:`OneShot`):

- ``uniform``: one path per step, every decision's option drawn uniformly (single-path one-shot, SPOS; Guo et al.
  2020);
- ``fair``: strict fairness (FairNAS; Chu et al. 2021): each step draws, per decision, a random order of its options
  and trains as many paths as the largest decision has options, the k-th path taking each decision's k-th option
  (decisions with fewer options wrap around), gradients summed over the paths before one update: every option of
  every decision is trained at every step;
- ``sandwich``: the largest path (each decision's costliest option by multiply-adds), the smallest, and ``paths``
  uniform ones per step, gradients summed (BigNAS; Yu et al. 2020); with ``distill``, every path but the largest
  learns from the largest's output of the same batch (in-place distillation) instead of the labels;
- ``mixture``: one soft mix of every decision's options per step, drawn by Gumbel-softmax at ``temperature`` from
  uniform logits: the supernet DNAS trains in its warm-up (FBNet; Wu et al. 2019), every candidate weighted in
  every forward.

A path is evaluated on the shared weights with its BatchNorm statistics re-estimated on that path
(``nascore.loops.recalibrate_batchnorm``): the running statistics gathered over many paths describe none of them.
"""
from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from nascore.costs.flops import FlopsCost
from nascore.data import epoch_seed, loader, to_device
from nascore.epochs import EpochLoop
from nascore.errors import NascoreError
from nascore.fileio import load_checkpoint
from nascore.loops import check_finite, cosine_lr, set_lr, weight_optimizer
from nascore.parts import Parts
from nascore.precision import FULL, Precision
from nascore.progress import Reporter
from nascore.spec import spec_changes
from nascore.spec_model import RunSpec, TrainBudget
from nascore.supernet import Decision, Supernet
from nascore.task import Network, Task, build_network

# random streams (nascore.data.epoch_seed) of the supernet phase: its batches, its paths, torch's own draws
DATA, PATHS, TORCH = 10, 11, 12


Rule = Literal["uniform", "fair", "sandwich", "mixture"]
#: what a step trains: a path (decision -> option), or under ``mixture`` a soft mix (decision -> option weights)
Draw = Mapping[str, str] | Mapping[str, Tensor]
#: the rules' names, for command lines (``nascore bench``'s parser spells them too: it loads no torch)
RULES: tuple[str, ...] = get_args(Rule)


class OneShot(BaseModel):
    """Which paths each step of one-shot training trains (the module's docstring)."""

    model_config = ConfigDict(extra="forbid")
    rule: Rule = "uniform"
    #: sandwich: uniform paths per step besides the largest and the smallest
    paths: int = Field(2, ge=0)
    #: sandwich: the other paths learn from the largest path's output (in-place distillation)
    distill: bool = True
    #: mixture: the Gumbel-softmax temperature (DNAS's initial 5.0)
    temperature: float = Field(5.0, gt=0)


UNIFORM = OneShot()


def uniform_arch(decisions: list[Decision], rng: random.Random) -> dict[str, str]:
    """Every decision's option drawn uniformly: the arch a single-path supernet step trains."""
    return {d.name: rng.choice(d.options) for d in decisions}


def extremes(supernet: Supernet, input_size: int, in_channels: int) -> tuple[dict[str, str], dict[str, str]]:
    """The largest and the smallest path by multiply-adds: each decision's costliest and cheapest option, chosen one
    decision at a time with the others held (two passes, so that decisions whose costs interact, such as FBNetV2's
    widths, settle; for a sum of per-option prices, as FBNet's, the first pass is exact)."""
    table = supernet.price(FlopsCost(), input_size, in_channels)
    decisions = supernet.decisions()

    def extreme(pick: Callable[..., int]) -> dict[str, str]:
        arch = {d.name: d.options[0] for d in decisions}
        for _ in range(2):
            for d in decisions:
                costs = [table.of_choices({**arch, d.name: option}) for option in d.options]
                arch[d.name] = d.options[pick(range(len(costs)), key=costs.__getitem__)]
        return arch

    return extreme(max), extreme(min)


class PathSampler:
    """The paths of each step under a rule, drawn from ``rng``."""

    def __init__(self, decisions: list[Decision], rule: OneShot, rng: random.Random,
                 largest: Mapping[str, str] | None = None, smallest: Mapping[str, str] | None = None):
        self.decisions, self.rule, self.rng = decisions, rule, rng
        self.largest, self.smallest = largest, smallest
        if rule.rule == "sandwich" and (largest is None or smallest is None):
            raise ValueError("the sandwich rule needs the largest and the smallest path")

    def step(self) -> list[Draw]:
        if self.rule.rule == "mixture":
            return [{d.name: self.gumbel_mix(len(d.options)) for d in self.decisions}]
        if self.rule.rule == "uniform":
            return [uniform_arch(self.decisions, self.rng)]
        if self.rule.rule == "fair":
            orders = {d.name: self.rng.sample(d.options, len(d.options)) for d in self.decisions}
            rounds = max(len(d.options) for d in self.decisions)
            return [{name: order[k % len(order)] for name, order in orders.items()} for k in range(rounds)]
        return [dict(self.largest), dict(self.smallest),
                *(uniform_arch(self.decisions, self.rng) for _ in range(self.rule.paths))]

    def gumbel_mix(self, n: int) -> Tensor:
        """A Gumbel-softmax sample over ``n`` options of equal logits at the rule's temperature."""
        gumbels = torch.tensor([-math.log(-math.log(self.rng.random() or 1e-300)) for _ in range(n)])
        return torch.softmax(gumbels / self.rule.temperature, 0)


def distillation(student: Tensor, teacher: Tensor) -> Tensor:
    """In-place distillation loss: KL to the teacher's softmax for class logits ``(N, C)``, else mean squared error
    (dense outputs: a teacher's soft classes per pixel are not what every dense task predicts)."""
    if student.dim() == 2:
        return F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="batchmean")
    return F.mse_loss(student, teacher)


def oneshot_step(network: nn.Module, supernet: Supernet, task: Task, paths: list[Draw], images: Any,
                 targets: Any, optimizer: torch.optim.Optimizer, rule: OneShot, epoch: int, step: int,
                 precision: Precision = FULL) -> float:
    """One update from ``paths`` of ``supernet`` (the backbone of ``network``, which may be wrapped in DDP; their
    gradients summed; with sandwich distillation, every path after the first learns from the first's output), in
    ``precision``'s autocast, loss scaling and memory format; returns the labels' loss of the first path."""
    optimizer.zero_grad(set_to_none=True)
    images = precision.images(images)
    teacher, first = None, 0.0
    for i, path in enumerate(paths):
        if rule.rule == "mixture":
            device = next(network.parameters()).device
            supernet.set_mix({name: weights.to(device) for name, weights in path.items()})
        else:
            supernet.set_choices(path)
        with precision.autocast():
            output = network(images)[task.name]
            if i and teacher is not None:
                loss = distillation(output, teacher)
            else:
                loss = task.loss(output, targets)
        if not i:
            first = loss.item()
            teacher = output.detach() if rule.rule == "sandwich" and rule.distill else None
        check_finite(loss, epoch, step)
        precision.backward(loss)
    precision.update(optimizer)
    return first


def scheduled_lr(cfg: TrainBudget, step: int, steps: int) -> float:
    """The ``train`` block's learning rate at ``step`` of ``steps`` (constant, or cosine)."""
    return cfg.lr if cfg.schedule == "constant" else cosine_lr(cfg.lr, step, steps)


def batches(parts: Parts, cfg: TrainBudget, epoch: int, stream: int, shard: bool = False) -> Any:
    """The training split shuffled for (seed, ``epoch``, ``stream``), in the ``train`` block's batches (with
    ``shard`` under torchrun: this rank's share of each)."""
    return loader(parts.train_set, cfg.batch_size, parts.collate, shuffle=True, seed=parts.seed, epoch=epoch,
                  stream=stream, shard=shard)


def supernet_fingerprint(spec: RunSpec, epochs: int, rule: OneShot = UNIFORM) -> str:
    """What a trained supernet depends on: the spec's data, space, first task, train block and seed, the epochs, and
    the rule (left out when it is the default, so supernets trained before the rules existed stay valid)."""
    dump = spec.dump()
    identity = {"dataset": dump["dataset"], "space": dump["space"], "task": dump["tasks"][0], "train": dump.get("train"),
                "seed": spec.seed, "device": spec.device, "epochs": epochs}
    if rule != UNIFORM:
        identity["rule"] = rule.model_dump()
    return json.dumps(identity, sort_keys=True)


class SharedPhaseLoop(EpochLoop):
    """The epochs of a shared phase (the supernet; pseudo-labels' shared head), resumed from its checkpoint when one
    of the same options (``fingerprint``) is there, each epoch's row logged with the phase's seconds so far."""

    def __init__(self, path: Path, what: str, fingerprint: str, epochs: int, parts: Parts,
                 get_state: Callable[[], dict[str, Any]], set_state: Callable[[dict[str, Any]], None],
                 reporter: Reporter):
        super().__init__(path, what, epochs, get_state, set_state, seed=parts.seed, stream=TORCH,
                         device=parts.device, identity={"fingerprint": fingerprint}, progress=reporter.progress)
        self.reporter = reporter

    def resumed(self, checkpoint: dict[str, Any], start: int) -> None:
        if start < self.epochs:
            self.reporter.log(f"resuming the {self.what} at epoch {start} of {self.epochs}")

    def ended(self, epoch: int, row: dict[str, Any]) -> None:
        self.reporter.epoch(self.what, {**row, "seconds": self.seconds})


def train_supernet(spec: RunSpec, parts: Parts, path: Path, epochs: int, reporter: Reporter,
                   rule: OneShot = UNIFORM) -> tuple[Network, float]:
    """The space's supernet trained ``epochs`` epochs of the spec's ``train`` block on the spec's first task under
    ``rule``, checkpointed to ``path`` after every epoch (and resumed from it); returns it with that task's head
    (``network.backbone`` is the supernet) and the seconds its training took over every run."""
    cfg, device = spec.train, parts.device
    torch.manual_seed(parts.seed)
    supernet = parts.space.supernet().to(device)
    task = parts.tasks[0]
    precision = parts.precision()
    network = precision.network(build_network(supernet, [task], parts.info).to(device))
    optimizer = weight_optimizer(network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    decisions = supernet.decisions()
    largest = smallest = None
    if rule.rule == "sandwich":
        largest, smallest = extremes(supernet, parts.space.input_size, parts.info.in_channels)

    def run_epoch(epoch: int) -> dict[str, float]:
        sampler = PathSampler(decisions, rule, random.Random(epoch_seed(parts.seed, epoch, PATHS)), largest, smallest)
        set_lr(optimizer, scheduled_lr(cfg, epoch, epochs))
        network.train()
        total, steps = 0.0, 0
        for step, (images, targets) in enumerate(batches(parts, cfg, epoch, DATA)):
            images, targets = to_device(images, device), to_device(targets, device)
            total += oneshot_step(network, supernet, task, sampler.step(), images, targets, optimizer, rule, epoch,
                                  step, precision)
            steps += 1
        return {"lr": optimizer.param_groups[0]["lr"], "loss": total / max(steps, 1)}

    def load(state: dict[str, Any]) -> None:
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state.get("precision", {}))

    loop = SharedPhaseLoop(path, "supernet", supernet_fingerprint(spec, epochs, rule), epochs, parts,
                           lambda: {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                                   "precision": precision.state_dict()}, load,
                           reporter)
    loop(run_epoch)
    return network, loop.seconds


def checked_supernet(source: Path, spec: RunSpec, epochs: int, rule: OneShot = UNIFORM,
                     epochs_flag: str = "--epochs") -> dict[str, Any]:
    """The checkpoint ``--supernet`` names, if it is a finished supernet of this spec, ``epochs`` and ``rule``; else
    a NascoreError naming the first field that differs (``epochs_flag``: the command's flag for the epochs)."""
    return check_fingerprint(load_checkpoint(source, what="--supernet checkpoint"), source, spec, epochs, rule,
                             epochs_flag)


def check_fingerprint(checkpoint: dict[str, Any], source: Path, spec: RunSpec, epochs: int, rule: OneShot,
                      epochs_flag: str) -> dict[str, Any]:
    """``checkpoint`` (read from ``source``) if it is a finished supernet of this spec, ``epochs`` and ``rule``."""
    try:
        theirs = json.loads(checkpoint.get("fingerprint"))
    except (TypeError, ValueError):
        theirs = None
    if not isinstance(theirs, dict):
        raise NascoreError(f"--supernet {source} is not the supernet.pt of a bench supernet-rank or pseudo-label "
                           "folder (it records no fingerprint of what it was trained for)")
    ours = json.loads(supernet_fingerprint(spec, epochs, rule))
    for identity in (theirs, ours):  # the default rule is left out of a fingerprint
        identity.setdefault("rule", UNIFORM.model_dump())
    changes = spec_changes(theirs, ours, limit=1)
    if changes:
        key = changes[0].split(":")[0]
        where = {"epochs": epochs_flag, "rule": "--rule"}.get(key.split(".")[0], f"the spec's {key}")
        raise NascoreError(f"--supernet {source} was trained for other options: {changes[0]} ({where}); a "
                           "supernet is scored only for the spec, epochs and rule it was trained with")
    done = checkpoint.get("epoch")
    if done != epochs - 1:
        raise NascoreError(f"--supernet {source} has trained {done + 1 if isinstance(done, int) else 0} of its "
                           f"{epochs} epochs; finish it (run its command again) first")
    return checkpoint
