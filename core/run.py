"""Runs: one output directory per run holding the resolved spec, arch.json, metrics.jsonl, checkpoints
(written atomically), the trained model and summary.json. ``resume`` continues from the last checkpoint;
every epoch reseeds from (seed, epoch), so a resumed run ends exactly like an uninterrupted one."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .arch import Arch, arch_space
from .costs.flops import count_macs, count_params
from .data import epoch_seed, loader, to_device
from .dataset import DataInfo
from .errors import NascoreError
from .fileio import (METRICS_MAX_BYTES, SPEC_MAX_BYTES, atomic_write_text, check_user_file, load_checkpoint,
                     load_user_yaml, parse_user_json, read_user_text, save_checkpoint)
from .loops import check_finite, cosine_lr, evaluate, set_lr, task_losses, weight_optimizer
from .pareto import ParetoRow, run_pareto, summarize
from .progress import Reporter
from .registry import Registry, get_registry
from .space import SearchSpace
from .spec import RunSpec, TrainConfig
from .strategy import SearchContext
from .task import Network, Task, build_network

SPEC_FILE, METRICS_FILE, SUMMARY_FILE = "spec.yaml", "metrics.jsonl", "summary.json"


@dataclass
class RunContext:
    """What lifecycle hooks see of a run."""

    spec: RunSpec
    out_dir: Path
    registry: Registry
    device: torch.device
    reporter: Reporter
    resume: bool = False
    created_dir: bool = False  # open_run made out_dir (so a run that never started may remove it)


def open_run(spec: RunSpec, out_dir: Path, resume: bool, registry: Registry | None = None,
             reporter: Reporter | None = None) -> RunContext:
    """Create (or, resuming, check) the run directory and write the resolved spec."""
    device = _device(spec.device)
    resolved = yaml.safe_dump(spec.dump(), sort_keys=False)
    spec_path = out_dir / SPEC_FILE
    if resume:
        if not os.path.lexists(spec_path):
            raise NascoreError(f"--resume: {out_dir} holds no run ({SPEC_FILE} is missing)")
        if load_user_yaml(spec_path, "--resume: the run's spec", SPEC_MAX_BYTES) != spec.dump():
            raise NascoreError(f"--resume: the spec differs from the one the run in {out_dir} started with "
                               f"({spec_path}); resume with the same spec and --set options")
        read_metrics(out_dir / METRICS_FILE)  # a run's own files are checked before anything is written
        for ckpt in sorted((out_dir / "checkpoints").glob("*.pt")):
            check_user_file(ckpt, "checkpoint")
    else:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise NascoreError(f"output directory {out_dir} is not empty; pass --resume to continue that run "
                               "or choose another --out")
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec_path, resolved)
    return RunContext(spec, out_dir, registry or get_registry(), device, reporter or Reporter(), resume,
                      created_dir=not resume and created)


def discard_unstarted(run: RunContext) -> None:
    """Remove a new run directory that holds nothing but its spec (the run failed before its first epoch),
    so the same command can be run again once the problem is fixed."""
    files = [p for p in run.out_dir.rglob("*") if p.is_file()]
    if run.resume or [p.name for p in files] != [SPEC_FILE]:
        return
    files[0].unlink()
    for d in sorted((p for p in run.out_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    if run.created_dir:
        run.out_dir.rmdir()


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise NascoreError(f"device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NascoreError("device: 'cuda' was asked for but CUDA is not available on this machine")
    return device


class EpochLoop:
    """Runs epochs of one phase, appending to metrics.jsonl and checkpointing after each epoch."""

    def __init__(self, run: RunContext, phase: str, epochs: int, get_state: Callable[[], dict],
                 set_state: Callable[[dict], None]):
        self.run, self.phase, self.epochs = run, phase, epochs
        self.get_state, self.set_state = get_state, set_state
        self.ckpt = run.out_dir / "checkpoints" / f"{phase.replace('/', '_')}.pt"

    def start_epoch(self) -> int:
        if not (self.run.resume and os.path.lexists(self.ckpt)):  # a dangling symlink or a FIFO is refused
            return 0
        state = load_checkpoint(self.ckpt, map_location=self.run.device)
        try:
            self.set_state(state["state"])
            return int(state["epoch"]) + 1
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise NascoreError(f"checkpoint {self.ckpt} does not match this run: {exc}") from None

    def __call__(self, run_epoch: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
        start = self.start_epoch()
        rows = _rewrite_metrics(self.run.out_dir / METRICS_FILE, self.phase, start)
        for epoch in range(start, self.epochs):
            torch.manual_seed(epoch_seed(self.run.spec.seed, epoch, stream=99))
            row = {"phase": self.phase, "epoch": epoch, **run_epoch(epoch)}
            with open(self.run.out_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")
            save_checkpoint({"epoch": epoch, "state": self.get_state()}, self.ckpt)
            rows.append(row)
            self.run.reporter.epoch(self.phase, row)
            self.run.registry.hook.nascore_epoch_end(run=self.run, epoch=epoch, metrics=row)
        return rows


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (none when it is missing): one JSON object per line with a "phase" (text)
    and an "epoch" (integer); only an unterminated last line, cut by a kill, may be broken (it is dropped)."""
    if not os.path.lexists(path):
        return []
    text = read_user_text(path, "metrics file", METRICS_MAX_BYTES)
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = parse_user_json(line, f"metrics file {path} line {i}")
        except NascoreError:
            if i == len(lines) and not text.endswith("\n"):
                continue  # a line cut by a kill
            raise
        if not (isinstance(row, dict) and isinstance(row.get("phase"), str) and type(row.get("epoch")) is int):
            raise NascoreError(f"metrics file {path} line {i}: expected a JSON object with a \"phase\" (text) and "
                               "an \"epoch\" (integer)")
        rows.append(row)
    return rows


def _rewrite_metrics(path: Path, phase: str, start: int) -> list[dict[str, Any]]:
    """Drop rows of ``phase`` from epoch ``start`` on (a resumed run redoes them); return the phase's rows."""
    if not os.path.lexists(path):
        return []
    kept = [r for r in read_metrics(path) if r["phase"] != phase or r["epoch"] < start]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return [r for r in kept if r["phase"] == phase]


# -- search -------------------------------------------------------------------------------------
def search(run: RunContext) -> tuple[dict[str | None, Arch], list[ParetoRow] | None]:
    """Search, save the derived arch(s), then (unless ``pareto.samples`` is 0) the Pareto step; returns the
    archs by owner and the Pareto rows (None when the step did not run)."""
    spec = run.spec
    dataset, tasks = spec.dataset.create(), [t.create() for t in spec.tasks]
    info = dataset.info()
    space = spec.space.create()
    torch.manual_seed(spec.seed)
    supernet = space.supernet()
    cost_model = spec.cost.create() if spec.cost else None
    table = None
    if cost_model is not None:
        cost_model.progress = run.reporter.progress
        table = supernet.price(cost_model, space.input_size, info.in_channels)
        problem = spec.objective.check_bounds(*table.bounds(), table.unit)
        if problem:
            raise NascoreError(problem)
    network = build_network(supernet, tasks, info).to(run.device)
    strategy = spec.strategy.create()
    ctx = SearchContext(network, supernet, tasks, dataset.split("train"), dataset.split("val"), dataset.collate,
                        run.device, spec.seed, cost_model, table, spec.objective if table is not None else None,
                        run.reporter.progress)
    strategy.setup(ctx)
    loop = EpochLoop(run, "search", strategy.epochs,
                     lambda: {"network": network.state_dict(), "strategy": strategy.state_dict()},
                     lambda s: (network.load_state_dict(s["network"]), strategy.load_state_dict(s["strategy"])))
    loop(strategy.run_epoch)
    config = space.config.model_dump(mode="json")
    archs = {owner: Arch(space=space.name, config=config, choices=choices, task=owner)
             for owner, choices in strategy.derive().items()}
    for owner, arch in archs.items():
        arch.save(run.out_dir / arch_file_name(owner, space))
    rows = None
    if spec.pareto.samples:
        rows = run_pareto(ctx, space, info.in_channels, strategy, spec.pareto, run.out_dir, run.reporter.log)
    return archs, rows


def arch_file_name(owner: str | None, space: SearchSpace | None = None) -> str:
    if owner is not None:
        return f"arch_{owner}.json"
    return space.arch_file if space is not None else "arch.json"


# -- training a fixed arch ---------------------------------------------------------------------
def train(run: RunContext, arch: Arch, phase: str = "train", ref: str = "arch.json") -> dict[str, Any]:
    """Train ``arch`` (named ``ref`` in errors) from scratch with the spec's ``train`` block, at the dataset's
    image size; returns final validation metrics, multiply-adds and params."""
    spec, cfg = run.spec, run.spec.train or TrainConfig()
    dataset = spec.dataset.create()
    tasks = [t.create() for t in spec.tasks if arch.task is None or t.name == arch.task]
    info = dataset.info()
    torch.manual_seed(spec.seed)
    network = arch_network(arch, tasks, info, run.registry, ref).to(run.device)
    optimizer = weight_optimizer(network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    train_set, val_set = dataset.split("train"), dataset.split("val")

    def run_epoch(epoch: int) -> dict[str, Any]:
        lr = cfg.lr if cfg.schedule == "constant" else cosine_lr(cfg.lr, epoch, cfg.epochs)
        set_lr(optimizer, lr)
        network.train()
        batches = loader(train_set, cfg.batch_size, dataset.collate, shuffle=True, seed=spec.seed, epoch=epoch)
        total, step = 0.0, 0
        with run.reporter.progress(len(batches), f"{phase} epoch {epoch} ({epoch + 1}/{cfg.epochs})") as advance:
            for step, (images, targets) in enumerate(batches):
                images, targets = to_device(images, run.device), to_device(targets, run.device)
                loss = sum(task_losses(network(images), targets, tasks).values())
                check_finite(loss, epoch, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
                advance()
        val = loader(val_set, cfg.batch_size, dataset.collate, shuffle=False)
        return {"lr": lr, "train_loss": total / (step + 1),
                **{f"val/{k}": v for k, v in evaluate(network, val, tasks, run.device).items()}}

    rows = EpochLoop(run, phase, cfg.epochs,
                     lambda: {"network": network.state_dict(), "optimizer": optimizer.state_dict()},
                     lambda s: (network.load_state_dict(s["network"]), optimizer.load_state_dict(s["optimizer"])))(
        run_epoch)
    save_checkpoint({"arch": arch.model_dump(mode="json"), "network": network.state_dict()},
                    run.out_dir / f"{phase.replace('/', '_')}_model.pt")
    final = {k: v for k, v in rows[-1].items() if k.startswith("val/")}
    return {**final, **model_counts(network, info.in_channels, info.image_size)}


def train_and_compare(run: RunContext, arch: Arch, space: SearchSpace, phase: str = "train",
                      ref: str = "arch.json") -> dict[str, Any]:
    """Train ``arch``; with ``train.references``, also the space's reference archs (same budget), and report
    each one's metrics, multiply-adds and mean relative task performance against the first reference."""
    out: dict[str, Any] = {"train": train(run, arch, phase, ref)}
    references = space.reference_archs() if (run.spec.train or TrainConfig()).references else {}
    if not references:
        return out
    results = {name: train(run, arch.model_copy(update={"choices": choices, "name": name}), f"{phase}/{name}", ref)
               for name, choices in references.items()}
    baseline = results[next(iter(references))]
    tasks = [t.create() for t in run.spec.tasks if arch.task is None or t.name == arch.task]
    out["references"] = {name: {**res, "relative": relative_performance(res, baseline, tasks)}
                         for name, res in results.items()}
    out["train"]["relative"] = relative_performance(out["train"], baseline, tasks)
    return out


def relative_performance(result: dict[str, Any], baseline: dict[str, Any], tasks: list) -> float | None:
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


def arch_network(arch: Arch, tasks: list[Task], info: DataInfo, registry: Registry, ref: str) -> Network:
    """``arch`` built at the dataset's image size with the heads of its tasks (every one of ``tasks`` for a shared
    arch, its own for a per-task one): the network ``train`` trains and summary.json counts."""
    space = arch_space(arch, ref, registry, input_size=info.image_size)
    return build_network(space.build(arch), [t for t in tasks if arch.task is None or t.name == arch.task], info)


def model_counts(network: torch.nn.Module, in_channels: int, image_size: int) -> dict[str, int]:
    device = next(network.parameters()).device
    return {"macs": count_macs(network, torch.zeros(1, in_channels, image_size, image_size, device=device)),
            "params": count_params(network)}


# -- the whole run -----------------------------------------------------------------------------
def run_spec(run: RunContext) -> dict[str, Any]:
    """Search, then (with a ``train`` block) train every found arch from scratch; write summary.json."""
    run.registry.hook.nascore_run_start(run=run)
    archs, pareto_rows = search(run)
    summary: dict[str, Any] = {"archs": {}}
    if pareto_rows is not None:
        summary["pareto"] = summarize(pareto_rows)
    last = [r for r in read_metrics(run.out_dir / METRICS_FILE) if r["phase"] == "search"][-1]
    info, tasks = run.spec.dataset.create().info(), [t.create() for t in run.spec.tasks]
    for owner, arch in archs.items():
        space = arch_space(arch, arch_file_name(owner), run.registry)
        entry: dict[str, Any] = {"file": arch_file_name(owner, space), "choices": arch.choices,
                                 "described": space.describe(arch)}
        # the last search epoch's validation metrics of the arch (of its own task for a per-task arch)
        prefix = "val/" if owner is None else f"val/{owner}/"
        network = arch_network(arch, tasks, info, run.registry, arch_file_name(owner, space))
        entry["search"] = {"epoch": last["epoch"], **{k: v for k, v in last.items() if k.startswith(prefix)},
                           **model_counts(network, info.in_channels, info.image_size)}
        if run.spec.train is not None:
            entry.update(train_and_compare(run, arch, space, "train" if owner is None else f"train/{owner}"))
        summary["archs"][owner or "shared"] = entry
    atomic_write_text(run.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    run.registry.hook.nascore_run_end(run=run, summary=summary)
    return summary
