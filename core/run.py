"""A run: the parts built once from its spec (device, dataset and splits, tasks, space) and its directory
(``rundir``). ``run_spec`` searches (``search``), then with a ``train`` block trains every found arch
(``train``); ``train_run`` trains one given arch. Both end with summary.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .arch import Arch
from .dataset import DataInfo, Dataset
from .errors import NascoreError
from .executor import Executor, LocalExecutor
from .pareto import summarize
from .precision import Precision
from .progress import Reporter
from .registry import Registry, get_registry
from .rundir import arch_file_name, check_dir, create_dir, write_summary
from .search import search
from .space import SearchSpace
from .spec_model import RunSpec
from .strategy import SHARED, owner_name
from .task import Task
from .train import arch_network, model_counts, train_and_compare


@dataclass
class Run:
    """One run, built once from its spec: what the search, the Pareto step, training, the summary and the
    lifecycle hooks use."""

    spec: RunSpec
    out_dir: Path
    registry: Registry
    device: torch.device
    reporter: Reporter
    dataset: Dataset
    info: DataInfo
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    tasks: list[Task]
    space: SearchSpace  # the spec's, which the search searches
    resume: bool = False
    created_dir: bool = False  # open() made out_dir (so a run that never started may remove it)
    #: where independent archs train (train.references, the random strategy's archs): ``--executor``
    executor: Executor = field(default_factory=LocalExecutor)

    def open(self) -> Run:
        """Make a new run's directory and write the resolved spec in it (a resumed run's is there)."""
        distributed.barrier()  # under torchrun: every rank checked the directory before rank 0 writes in it
        if not self.resume and distributed.is_main():
            self.created_dir = create_dir(self.spec, self.out_dir)
        distributed.barrier()
        return self

    def precision(self) -> Precision:
        """A new ``Precision`` of the spec's ``amp`` and ``channels_last``: one per phase, so that each training
        starts with its own loss scale."""
        return Precision(self.spec.amp, self.spec.channels_last, self.device)


def build_run(spec: RunSpec, out_dir: Path, resume: bool, registry: Registry | None = None,
              reporter: Reporter | None = None, executor: Executor | None = None) -> Run:
    """The run of ``spec`` in ``out_dir``, its directory checked and its parts built; nothing is written yet. Under
    torchrun this process joins the job's process group, on its rank's device, and only rank 0 reports."""
    device = distributed.setup(_device(spec.device))
    if spec.distributed is not None and spec.distributed.sync_batchnorm and distributed.launched() \
            and device.type != "cuda":
        raise NascoreError("distributed.sync_batchnorm: SyncBatchNorm needs CUDA devices (NCCL); this torchrun job "
                           f"runs on '{device}'")
    if spec.amp is not None and spec.amp.dtype == "fp16" and distributed.launched():
        # each rank would skip an overflowing step on its own gradients' inf check: ranks would drift or hang
        raise NascoreError("amp.dtype: fp16 (a loss scaler per process) is not supported under torchrun; use bf16")
    check_dir(spec, out_dir, resume)
    dataset = spec.dataset.create()
    reporter = reporter or Reporter(quiet=not distributed.is_main())
    return Run(spec, out_dir, registry or get_registry(), device, reporter, dataset, dataset.info(),
               dataset.split("train"), dataset.split("val"), [t.create() for t in spec.tasks], spec.space.create(),
               resume, executor=executor or LocalExecutor())


def open_run(spec: RunSpec, out_dir: Path, resume: bool, registry: Registry | None = None,
             reporter: Reporter | None = None, executor: Executor | None = None) -> Run:
    """``build_run``, then the run's directory opened."""
    return build_run(spec, out_dir, resume, registry, reporter, executor).open()


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise NascoreError(f"device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NascoreError("device: 'cuda' was asked for but CUDA is not available on this machine")
    return device


def run_spec(run: Run) -> dict[str, Any]:
    """Search, then (with a ``train`` block) train every found arch from scratch; write summary.json."""
    run.registry.hook.nascore_run_start(run=run)
    archs, pareto_rows, last = search(run)
    summary: dict[str, Any] = {"archs": {}}
    if pareto_rows is not None:
        summary["pareto"] = summarize(pareto_rows)
    for owner, arch in archs.items():
        entry = arch_entry(arch, run.space, arch_file_name(owner, run.space))
        # the last search epoch's validation metrics of the arch (of its own task for a per-task arch)
        prefix = "val/" if owner is SHARED else f"val/{owner}/"
        network = arch_network(run, arch, run.space)
        entry["search"] = {"epoch": last["epoch"], **{k: v for k, v in last.items() if k.startswith(prefix)},
                           **model_counts(network, run.info.in_channels, run.info.image_size)}
        if run.spec.train is not None:
            entry.update(train_and_compare(run, arch, run.space, "train" if owner is SHARED else f"train/{owner}"))
        summary["archs"][owner_name(owner)] = entry
    return finish(run, summary)


def train_run(run: Run, arch: Arch, space: SearchSpace) -> dict[str, Any]:
    """Train ``arch`` of ``space`` (and its references) from scratch, saved beside the spec; write summary.json."""
    if not run.resume and distributed.is_main():
        arch.save(run.out_dir / space.arch_file)
    run.registry.hook.nascore_run_start(run=run)
    entry = {**arch_entry(arch, space, space.arch_file), **train_and_compare(run, arch, space)}
    return finish(run, {"archs": {owner_name(arch.task): entry}})


def arch_entry(arch: Arch, space: SearchSpace, file: str) -> dict[str, Any]:
    """The start of an arch's entry in summary.json: its file in the run directory, choices and description."""
    return {"file": file, "choices": arch.choices, "described": space.describe(arch)}


def finish(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """Write summary.json and tell the ``nascore_run_end`` hooks; returns ``summary``."""
    write_summary(run.out_dir, summary)
    run.registry.hook.nascore_run_end(run=run, summary=summary)
    return summary
