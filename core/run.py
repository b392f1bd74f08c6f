"""The runner: ``run_spec`` searches (``search``), then with a ``train`` block trains every found arch (``train``);
``train_run`` trains one given arch. Both take a run opened in its directory (``rundir.open_run``) and end with
summary.json."""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import distributed
from .arch import Arch, arch_space
from .executor import Executor
from .pareto import summarize
from .rundir import Run, arch_file_name, build_run, write_summary
from .search import search
from .space import SearchSpace
from .spec_model import RunSpec
from .strategy import SHARED, owner_name
from .train import arch_network, model_counts, train_and_compare

P = ParamSpec("P")
R = TypeVar("R")


def _closing(fn: Callable[Concatenate[Run, P], R]) -> Callable[Concatenate[Run, P], R]:
    """``fn(run, ...)``, the run closed when it returns or raises."""
    @functools.wraps(fn)
    def closing(run: Run, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(run, *args, **kwargs)
        finally:
            run.close()
    return closing


@_closing
def run_spec(run: Run) -> dict[str, Any]:
    """Search, then (with a ``train`` block) train every found arch from scratch; write summary.json."""
    run.registry.hook.nascore_run_start(run=run)
    archs, pareto_rows, last = search(run)
    summary: dict[str, Any] = {"archs": {}}
    if pareto_rows is not None:
        summary["pareto"] = summarize(pareto_rows)
    space = run.parts.space
    for owner, arch in archs.items():
        entry = arch_entry(arch, space, arch_file_name(owner, space))
        # the last search epoch's validation metrics of the arch (of its own task for a per-task arch)
        prefix = "val/" if owner is SHARED else f"val/{owner}/"
        network = arch_network(run, arch, space)
        entry["search"] = {"epoch": last["epoch"], **{k: v for k, v in last.items() if k.startswith(prefix)},
                           **model_counts(network, run.parts.info.in_channels, run.parts.info.image_size)}
        if run.spec.train is not None:
            entry.update(train_and_compare(run, arch, space, "train" if owner is SHARED else f"train/{owner}"))
        summary["archs"][owner_name(owner)] = entry
    return finish(run, summary)


@_closing
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


def train_found(spec: RunSpec, arch: Arch, ref: str, out_dir: Path, resume: bool,
                executor: Executor | None = None) -> tuple[Run, dict[str, Any]]:
    """``nascore train``: ``arch`` (``ref``: its file or name) trained from scratch with ``spec``'s ``train`` block
    in ``out_dir``; returns the run and its summary. An arch found for a task the spec does not have (FBNetV5's
    ``arch_detection.json`` in a detectron2 spec) is trained for the spec's tasks, and a note says so."""
    run = build_run(spec, out_dir, resume, executor=executor)
    space = arch_space(arch, ref, run.registry, input_size=run.parts.info.image_size)  # checked before writing
    names = [t.name for t in run.parts.tasks]
    note = None
    if arch.task is not None and arch.task not in names:
        note = (f"note: {ref} was found for task '{arch.task}', which the spec does not have: it is trained for the "
                f"spec's tasks ({', '.join(names)})")
        arch = arch.model_copy(update={"task": None})
    run.open()
    run.reporter.log(f"run directory: {run.out_dir}")
    if note:
        run.reporter.log(note)
    return run, train_run(run, arch, space)
