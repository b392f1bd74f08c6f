"""Training a fixed arch from scratch with the spec's ``train`` block (checkpointed per epoch), its reference archs
with the same budget, and how they compare."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .arch import Arch
from .costs.flops import count_macs, count_params
from .data import loader
from .fileio import save_checkpoint
from .loops import cosine_lr, evaluate, set_lr, train_step, weight_optimizer
from .progress import Progress, no_progress
from .rundir import EpochLoop
from .spec import TrainBudget, TrainConfig
from .strategy import owner_tasks
from .task import Network, Task, build_network

if TYPE_CHECKING:
    from .run import Run
    from .space import SearchSpace


def train(run: Run, arch: Arch, space: SearchSpace, phase: str = "train") -> dict[str, Any]:
    """Train ``arch`` of ``space`` from scratch with the spec's ``train`` block, at the dataset's image size;
    returns final validation metrics, multiply-adds and params."""
    spec, cfg = run.spec, run.spec.train or TrainConfig()
    tasks = owner_tasks(run.tasks, arch.task)
    torch.manual_seed(spec.seed)
    network = arch_network(run, arch, space).to(run.device)
    optimizer = weight_optimizer(network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def run_epoch(epoch: int) -> dict[str, Any]:
        lr, loss = train_epoch(network, optimizer, tasks, run.train_set, run.dataset.collate, cfg, spec.seed, epoch,
                               run.device, run.reporter.progress, f"{phase} epoch {epoch} ({epoch + 1}/{cfg.epochs})")
        return {"lr": lr, "train_loss": loss,
                **validate(network, run.val_set, run.dataset.collate, tasks, cfg, run.device)}

    rows = EpochLoop(run, phase, cfg.epochs,
                     lambda: {"network": network.state_dict(), "optimizer": optimizer.state_dict()},
                     lambda s: (network.load_state_dict(s["network"]), optimizer.load_state_dict(s["optimizer"])))(
        run_epoch)
    save_checkpoint({"arch": arch.model_dump(mode="json"), "network": network.state_dict()},
                    run.out_dir / f"{phase.replace('/', '_')}_model.pt")
    final = {k: v for k, v in rows[-1].items() if k.startswith("val/")}
    return {**final, **model_counts(network, run.info.in_channels, run.info.image_size)}


def train_epoch(network: Network, optimizer: torch.optim.Optimizer, tasks: list[Task],
                train_set: torch.utils.data.Dataset, collate: Callable[[list], Any], cfg: TrainBudget, seed: int,
                epoch: int, device: torch.device, progress: Progress = no_progress, label: str = "train"
                ) -> tuple[float, float]:
    """One epoch of the ``train`` block: its learning-rate schedule, shuffled batches seeded by (seed, epoch), one
    ``train_step`` per batch. Returns the epoch's learning rate and mean training loss."""
    lr = cfg.lr if cfg.schedule == "constant" else cosine_lr(cfg.lr, epoch, cfg.epochs)
    set_lr(optimizer, lr)
    network.train()
    batches = loader(train_set, cfg.batch_size, collate, shuffle=True, seed=seed, epoch=epoch)
    total, step = 0.0, 0
    with progress(len(batches), label) as advance:
        for step, (images, targets) in enumerate(batches):
            loss, _ = train_step(network, images, targets, tasks, optimizer, device, epoch, step)
            total += loss.item()
            advance()
    return lr, total / (step + 1)


def validate(network: Network, val_set: torch.utils.data.Dataset, collate: Callable[[list], Any],
             tasks: list[Task], cfg: TrainBudget, device: torch.device) -> dict[str, float]:
    """Every task's validation metrics, keyed ``val/<task>/<metric>``."""
    val = loader(val_set, cfg.batch_size, collate, shuffle=False)
    return {f"val/{k}": v for k, v in evaluate(network, val, tasks, device).items()}


def train_and_compare(run: Run, arch: Arch, space: SearchSpace, phase: str = "train") -> dict[str, Any]:
    """Train ``arch``; with ``train.references``, also the space's reference archs (same budget), and report
    each one's metrics, multiply-adds and mean relative task performance against the first reference."""
    out: dict[str, Any] = {"train": train(run, arch, space, phase)}
    references = space.reference_archs() if (run.spec.train or TrainConfig()).references else {}
    if not references:
        return out
    results = {name: train(run, arch.model_copy(update={"choices": choices, "name": name}), space,
                           f"{phase}/{name}")
               for name, choices in references.items()}
    baseline = results[next(iter(references))]
    tasks = owner_tasks(run.tasks, arch.task)
    out["references"] = {name: {**res, "relative": relative_performance(res, baseline, tasks)}
                         for name, res in results.items()}
    out["train"]["relative"] = relative_performance(out["train"], baseline, tasks)
    return out


def relative_performance(result: dict[str, Any], baseline: dict[str, Any], tasks: list[Task]) -> float | None:
    """Mean over tasks of the primary metric's relative change against ``baseline`` (positive = better), as in
    multi-task learning papers (Maninis et al. 2019; BMTAS reports it against single-task networks). Tasks whose
    baseline metric is 0 have no relative change and are left out (None when that leaves none)."""
    changes = []
    for t in tasks:
        key = f"val/{t.name}/{t.primary_metric}"
        if baseline[key] != 0:
            sign = 1.0 if t.higher_is_better else -1.0
            changes.append(sign * (result[key] - baseline[key]) / abs(baseline[key]))
    return sum(changes) / len(changes) if changes else None


def arch_network(run: Run, arch: Arch, space: SearchSpace) -> Network:
    """``arch`` built by ``space`` (the one it was found in) at the dataset's image size, with the heads of its
    tasks (every task of the run for a shared arch, its own for a per-task one): the network ``train`` trains and
    summary.json counts."""
    size = {"input_size": run.info.image_size} if "input_size" in space.Config.model_fields else {}
    return build_network(space.for_arch(arch, **size).build(arch), owner_tasks(run.tasks, arch.task), run.info)


def model_counts(network: torch.nn.Module, in_channels: int, image_size: int) -> dict[str, int]:
    device = next(network.parameters()).device
    return {"macs": count_macs(network, torch.zeros(1, in_channels, image_size, image_size, device=device)),
            "params": count_params(network)}
