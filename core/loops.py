"""Shared pieces of training loops: task losses, finiteness checks, the train step, evaluation, optimisers."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import checks
from .data import to_device
from .errors import NonFiniteLossError
from .precision import FULL, Precision
from .task import Task


def task_losses(outputs: dict[str, Any], targets: dict[str, Any], tasks: list[Task]) -> dict[str, Tensor]:
    return {t.name: t.loss(outputs[t.name], targets) for t in tasks}


def check_finite(loss: Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss.detach()).all():
        raise NonFiniteLossError(epoch, step)


def summed(losses: dict[str, Tensor]) -> Tensor:
    """The task losses added up, in task order: what a plain train step minimises."""
    return sum(losses.values())


def train_step(network: nn.Module, images: Any, targets: Any, tasks: list[Task], optimizer: torch.optim.Optimizer,
               device: torch.device, epoch: int, step: int,
               objective: Callable[[dict[str, Tensor]], Tensor] = summed,
               inputs: Sequence[Tensor] | None = None, precision: Precision = FULL
               ) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimiser step on a batch: to ``device`` (in ``precision``'s memory format), forward and every task's
    loss (under its autocast), ``objective`` of them (called after the forward) checked finite (else the run stops
    naming ``epoch`` and ``step``), then zero_grad, backward (into ``inputs`` only, when given) and the optimiser's
    step (loss-scaled under fp16). Returns the loss and the task losses."""
    images, targets = precision.images(to_device(images, device)), to_device(targets, device)
    with precision.autocast():
        losses = task_losses(network(images), targets, tasks)
        loss = objective(losses)
    check_finite(loss, epoch, step)
    precision.step(loss, optimizer, inputs)
    return loss, losses


@torch.no_grad()
def evaluate(network: nn.Module, batches: Iterable, tasks: list[Task], device: torch.device) -> dict[str, float]:
    """Metrics of every task over ``batches``, keyed ``<task>/<metric>``, plus ``<task>/loss``."""
    was_training = network.training
    network.eval()
    metrics = {t.name: t.metrics(device) for t in tasks}
    loss_sums = {t.name: 0.0 for t in tasks}
    n = 0
    for images, targets in batches:
        images, targets = to_device(images, device), to_device(targets, device)
        outputs = network(images)
        for t in tasks:
            loss_sums[t.name] += float(t.loss(outputs[t.name], targets)) * len(images)
            t.update_metrics(metrics[t.name], outputs[t.name], targets)
        n += len(images)
    network.train(was_training)
    out: dict[str, float] = {}
    for t in tasks:
        out.update({f"{t.name}/{k}": v for k, v in task_metrics(t, metrics[t.name]).items()})
        out[f"{t.name}/loss"] = loss_sums[t.name] / max(n, 1)
    return out


def task_metrics(task: Task, metrics: Any) -> dict[str, float]:
    """``task.compute_metrics(metrics)``, checked: a dict of metric name -> number holding the primary metric."""
    computed = task.compute_metrics(metrics)
    problem = checks.numbers_problem(computed, "its metrics")
    if problem is None and task.primary_metric not in computed:
        problem = f"no {task.primary_metric!r}, the task's primary_metric (it returned {', '.join(computed)})"
    if problem:
        raise checks.refuse(task, "compute_metrics", f"returned {problem}")
    return dict(computed)


@torch.no_grad()
def recalibrate_batchnorm(network: nn.Module, batches: Iterable, device: torch.device) -> None:
    """Re-estimate BatchNorm statistics for the current (e.g. one-hot) architecture of a supernet: the
    running statistics gathered under mixed paths do not describe a single path."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    was_training = network.training
    network.train()
    for images, _ in batches:
        network(to_device(images, device))
    network.train(was_training)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Cosine decay per epoch, a pure function of the epoch so that resuming needs no scheduler state."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def weight_optimizer(params: Iterable[Tensor], kind: str, lr: float, momentum: float, weight_decay: float
                     ) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
