"""Training a fixed arch from scratch with the spec's ``train`` block (checkpointed per epoch), its reference archs
with the same budget, and how they compare."""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nascore.costs.flops import count_macs, count_params

from . import distributed
from .arch import Arch
from .data import loader
from .fileio import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint
from .loops import cosine_lr, evaluate, set_lr, train_step, weight_optimizer
from .precision import FULL, Precision
from .progress import Progress, Reporter, no_progress
from .rundir import METRICS_FILE, PhaseLoop, Run, build_run, read_metrics
from .spec import validate_spec
from .spec_model import TrainBudget, TrainConfig
from .strategy import owner_tasks
from .task import Network, Task, build_network

if TYPE_CHECKING:
    from .space import SearchSpace


def train(run: Run, arch: Arch, space: SearchSpace, phase: str = "train") -> dict[str, Any]:
    """Train ``arch`` of ``space`` from scratch with the spec's ``train`` block, at the dataset's image size;
    returns final validation metrics, multiply-adds and params."""
    parts = run.parts
    spec, cfg = run.spec, run.spec.train or TrainConfig()
    tasks = owner_tasks(parts.tasks, arch.task)
    torch.manual_seed(spec.seed)
    precision = parts.precision()
    network = precision.network(distributed.sync_batchnorm(arch_network(run, arch, space).to(parts.device), spec))
    optimizer = weight_optimizer(network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def run_epoch(epoch: int) -> dict[str, Any]:
        lr, loss = train_epoch(network, optimizer, tasks, parts.train_set, parts.collate, cfg, spec.seed, epoch,
                               parts.device, run.reporter.progress, f"{phase} epoch {epoch} ({epoch + 1}/{cfg.epochs})",
                               precision)
        return {"lr": lr, "train_loss": loss,
                **validate(network, parts.val_set, parts.collate, tasks, cfg, parts.device)}

    def set_state(s: dict[str, Any]) -> None:
        network.load_state_dict(s["network"])
        optimizer.load_state_dict(s["optimizer"])
        precision.load_state_dict(s.get("precision", {}))

    rows = PhaseLoop(run, phase, cfg.epochs, lambda: {"network": network.state_dict(), "optimizer":
                                                      optimizer.state_dict(), "precision": precision.state_dict()},
                     set_state)(run_epoch)
    if distributed.is_main():
        save_checkpoint({"arch": arch.model_dump(mode="json"), "network": network.state_dict()},
                        run.out_dir / f"{phase.replace('/', '_')}_model.pt")
    distributed.barrier()
    final = {k: v for k, v in rows[-1].items() if k.startswith("val/")}
    return {**final, **model_counts(network, parts.info.in_channels, parts.info.image_size)}


def train_epoch(network: Network, optimizer: torch.optim.Optimizer, tasks: list[Task],
                train_set: torch.utils.data.Dataset, collate: Callable[[list], Any], cfg: TrainBudget, seed: int,
                epoch: int, device: torch.device, progress: Progress = no_progress, label: str = "train",
                precision: Precision = FULL) -> tuple[float, float]:
    """One epoch of the ``train`` block: its learning-rate schedule, shuffled batches seeded by (seed, epoch), one
    ``train_step`` per batch. Returns the epoch's learning rate and mean training loss (of this rank's share).
    Under torchrun each rank steps on its share of every batch through DDP, and ends the epoch with rank 0's
    BatchNorm statistics: every rank then holds the same network."""
    lr = cfg.lr if cfg.schedule == "constant" else cosine_lr(cfg.lr, epoch, cfg.epochs)
    set_lr(optimizer, lr)
    network.train()
    stepped = distributed.wrap(network, find_unused_parameters=False)  # a built arch uses all its weights
    batches = loader(train_set, cfg.batch_size, collate, shuffle=True, seed=seed, epoch=epoch, shard=True)
    total, step = 0.0, 0
    with progress(len(batches), label) as advance:
        for step, (images, targets) in enumerate(batches):
            loss, _ = train_step(stepped, images, targets, tasks, optimizer, device, epoch, step,
                                 precision=precision)
            total += loss.item()
            advance()
    distributed.sync_buffers(network)
    return lr, total / (step + 1)


def validate(network: Network, val_set: torch.utils.data.Dataset, collate: Callable[[list], Any],
             tasks: list[Task], cfg: TrainBudget, device: torch.device) -> dict[str, float]:
    """Every task's validation metrics, keyed ``val/<task>/<metric>``: on the whole validation set, on every rank
    under torchrun (the ranks hold the same network, so they get the same metrics; nothing to reduce)."""
    val = loader(val_set, cfg.batch_size, collate, shuffle=False)
    return {f"val/{k}": v for k, v in evaluate(network, val, tasks, device).items()}


def train_and_compare(run: Run, arch: Arch, space: SearchSpace, phase: str = "train") -> dict[str, Any]:
    """Train ``arch``; with ``train.references``, also the space's reference archs (same budget), and report
    each one's metrics, multiply-adds and mean relative task performance against the first reference."""
    references = space.reference_archs() if (run.spec.train or TrainConfig()).references else {}
    trained = train_all(run, {phase: arch, **{f"{phase}/{name}": arch.model_copy(update={"choices": choices,
                                                                                         "name": name})
                                              for name, choices in references.items()}}, space)
    out: dict[str, Any] = {"train": trained[phase]}
    if not references:
        return out
    results = {name: trained[f"{phase}/{name}"] for name in references}
    baseline = results[next(iter(references))]
    tasks = owner_tasks(run.parts.tasks, arch.task)
    out["references"] = {name: {**res, "relative": relative_performance(res, baseline, tasks)}
                         for name, res in results.items()}
    out["train"]["relative"] = relative_performance(out["train"], baseline, tasks)
    return out


def train_all(run: Run, phases: dict[str, Arch], space: SearchSpace) -> dict[str, dict[str, Any]]:
    """``train`` of the arch of every phase: in this process one after another, or, with a parallel executor
    (``run.executor``, e.g. Ray), all at once elsewhere, each phase's metrics rows and files written into the run
    as it finishes. A resumed run trains again only the phases whose training had not finished."""
    if not run.executor.parallel:
        return {phase: train(run, arch, space, phase) for phase, arch in phases.items()}
    epochs = (run.spec.train or TrainConfig()).epochs
    done = {p: train(run, a, space, p) for p, a in phases.items() if run.resume and _finished(run, p, epochs)}
    todo = [p for p in phases if p not in done]
    for i, (result, rows, files) in run.executor.run(train_apart, [(phases[p], p) for p in todo],
                                                     (run.spec.dump(), space)):
        phase = todo[i]
        metrics = run.out_dir / METRICS_FILE
        kept = [r for r in read_metrics(metrics) if r["phase"] != phase]  # a phase begun in this process before
        atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept + rows))
        # the checkpoint last: it is what marks the phase finished for a resumed run
        for name in sorted(files, key=lambda n: n.startswith("checkpoints")):
            atomic_write_bytes(run.out_dir / name, files[name])
        for row in rows:
            run.reporter.epoch(phase, row)
            run.registry.hook.nascore_epoch_end(run=run, epoch=row["epoch"], metrics=row)
        done[phase] = result
    return {phase: done[phase] for phase in phases}


def _finished(run: Run, phase: str, epochs: int) -> bool:
    ckpt = run.out_dir / "checkpoints" / f"{phase.replace('/', '_')}.pt"
    return ckpt.is_file() and int(load_checkpoint(ckpt)["epoch"]) + 1 >= epochs


def train_apart(shared: tuple[dict[str, Any], SearchSpace], arch: Arch, phase: str
                ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bytes]]:
    """``train`` in a run directory of its own (an executor's job, e.g. a Ray task; ``shared``: the spec's dump and
    the space): the result, the phase's metrics rows and the files it wrote (checkpoint, model), relative paths."""

    spec, space = shared
    with tempfile.TemporaryDirectory(prefix="nascore-train-") as tmp:
        run = build_run(validate_spec(spec), Path(tmp) / "run", False, reporter=Reporter(quiet=True)).open()
        result = train(run, arch, space, phase)
        files = {str(p.relative_to(run.out_dir)): p.read_bytes() for p in run.out_dir.rglob("*.pt")}
        return result, read_metrics(run.out_dir / METRICS_FILE), files


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
    return build_network(space.for_arch(arch, input_size=run.parts.info.image_size).build(arch),
                         owner_tasks(run.parts.tasks, arch.task), run.parts.info)


def model_counts(network: torch.nn.Module, in_channels: int, image_size: int) -> dict[str, int]:
    device = next(network.parameters()).device
    return {"macs": count_macs(network, torch.zeros(1, in_channels, image_size, image_size, device=device)),
            "params": count_params(network)}
