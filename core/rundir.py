"""A run (``Run``: its parts, built once from its spec, and its directory, ``build_run`` / ``open_run``) and its
directory: the resolved spec, metrics.jsonl, checkpoints (written atomically), the arch files and
summary.json. A run's epochs are checkpointed as they end; every epoch reseeds from (seed, epoch), so a resumed
run ends exactly like an uninterrupted one. Under torchrun rank 0 alone writes the directory (the other ranks hold
the same state: ``distributed``), the ranks meeting at a barrier after each epoch's writes."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import distributed
from .epochs import EpochLoop
from .errors import NascoreError
from .executor import Executor, LocalExecutor
from .fileio import (
    METRICS_MAX_BYTES,
    SPEC_MAX_BYTES,
    atomic_write_text,
    check_user_file,
    load_user_yaml,
    parse_user_json,
    read_user_text,
)
from .lock import LOCK_FILE, WriteLock
from .parts import Parts, resolve_device
from .progress import Reporter
from .registry import Registry, get_registry
from .spec import spec_changes
from .spec_model import RunSpec
from .strategy import SHARED

if TYPE_CHECKING:
    from .space import SearchSpace

SPEC_FILE, METRICS_FILE, SUMMARY_FILE = "spec.yaml", "metrics.jsonl", "summary.json"


@dataclass
class Run:
    """One run: its parts, built once from its spec, and its directory; what the search, the Pareto step, training,
    the summary and the lifecycle hooks use."""

    spec: RunSpec
    parts: Parts
    out_dir: Path
    registry: Registry
    reporter: Reporter
    resume: bool = False
    created_dir: bool = False  # open() made out_dir (so a run that never started may remove it)
    #: where independent archs train (train.references, the random strategy's archs): ``--executor``
    executor: Executor = field(default_factory=LocalExecutor)
    #: the run directory's lock, held by rank 0 from ``open`` until the run ends (``close``)
    lock: WriteLock | None = None

    def open(self) -> Run:
        """Lock the run's directory (``nascore.lock``: a second writer is refused at once), made when missing, and
        write a new run's resolved spec in it (a resumed run's is there)."""
        distributed.barrier()  # under torchrun: every rank checked the directory before rank 0 writes in it
        self.lock = distributed.on_main(self._start)
        return self

    def _start(self) -> WriteLock:
        lock = WriteLock.of_directory(self.out_dir).acquire()
        try:
            if not self.resume:
                check_dir(self.spec, self.out_dir, False)  # still empty: no run ended in it since it was checked
                create_dir(self.spec, self.out_dir)
        except BaseException:
            lock.release()
            raise
        self.created_dir = lock.created is not None
        return lock

    def close(self) -> None:
        """Give back the run directory's lock: the run writes no more."""
        if self.lock is not None:
            self.lock.release()


def build_run(spec: RunSpec, out_dir: Path, resume: bool, registry: Registry | None = None,
              reporter: Reporter | None = None, executor: Executor | None = None, search: bool = False) -> Run:
    """The run of ``spec`` in ``out_dir``, its directory checked and its parts built; nothing is written yet. Under
    torchrun this process joins the job's process group, on its rank's device, and only rank 0 reports. ``search``:
    the run searches, and the files its strategy names are checked before the data is built
    (``SearchStrategy.check_inputs``)."""
    device = distributed.setup(resolve_device(spec.device))
    if spec.distributed is not None and spec.distributed.sync_batchnorm and distributed.launched() \
            and device.type != "cuda":
        raise NascoreError("distributed.sync_batchnorm: SyncBatchNorm needs CUDA devices (NCCL); this torchrun job "
                           f"runs on '{device}'")
    if spec.amp is not None and spec.amp.dtype == "fp16" and distributed.launched():
        # each rank would skip an overflowing step on its own gradients' inf check: ranks would drift or hang
        raise NascoreError("amp.dtype: fp16 (a loss scaler per process) is not supported under torchrun; use bf16")
    check_dir(spec, out_dir, resume)
    if search:
        spec.strategy.create().check_inputs(spec)
    reporter = reporter or Reporter(quiet=not distributed.is_main())
    return Run(spec, Parts.build(spec, device), out_dir, registry or get_registry(), reporter, resume,
               executor=executor or LocalExecutor())


def open_run(spec: RunSpec, out_dir: Path, resume: bool, registry: Registry | None = None,
             reporter: Reporter | None = None, executor: Executor | None = None) -> Run:
    """``build_run`` of a run that searches (``nascore run``), then the run's directory opened."""
    return build_run(spec, out_dir, resume, registry, reporter, executor, search=True).open()


def check_dir(spec: RunSpec, out_dir: Path, resume: bool) -> None:
    """Refuse a directory the run cannot use: resuming, one that holds no run of ``spec`` or whose metrics or
    checkpoints are broken (checked before anything is written); else one that is not empty (its lock file
    aside)."""
    spec_path = out_dir / SPEC_FILE
    if resume:
        if not os.path.lexists(spec_path):
            raise NascoreError(f"--resume: {out_dir} holds no run ({SPEC_FILE} is missing)")
        changes = spec_changes(load_user_yaml(spec_path, "--resume: the run's spec", SPEC_MAX_BYTES), spec.dump())
        if changes:
            raise NascoreError(f"--resume: the spec differs from the one the run in {out_dir} started with "
                               f"({spec_path}): {'; '.join(changes)}; resume with the same spec and --set options, "
                               "or run the changed spec in another --out")
        read_metrics(out_dir / METRICS_FILE)
        for ckpt in sorted((out_dir / "checkpoints").glob("*.pt")):
            check_user_file(ckpt, "checkpoint")
    elif out_dir.exists() and any(p.name != LOCK_FILE for p in out_dir.iterdir()):
        raise NascoreError(f"output directory {out_dir} is not empty; pass --resume to continue that run "
                           "or choose another --out")


def create_dir(spec: RunSpec, out_dir: Path) -> None:
    """Make ``out_dir`` (when missing) and write the resolved spec in it."""
    resolved = yaml.safe_dump(spec.dump(), sort_keys=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SPEC_FILE, resolved)


def discard_unstarted(run: Run) -> None:
    """Remove a new run directory that holds nothing but its spec (the run failed before its first epoch),
    so the same command can be run again once the problem is fixed."""
    if run.resume or not distributed.is_main():
        return
    files = [p for p in run.out_dir.rglob("*") if p.is_file()]
    if [p.name for p in files] != [SPEC_FILE]:
        return
    files[0].unlink()
    for d in sorted((p for p in run.out_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    if run.created_dir:
        run.out_dir.rmdir()


def arch_file_name(owner: str | None, space: SearchSpace) -> str:
    """The file of a found arch: the space's arch file for one all tasks share, ``arch_<task>.json`` for a task's."""
    return space.arch_file if owner is SHARED else f"arch_{owner}.json"


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    """Write summary.json (rank 0 under torchrun; every rank waits for it)."""
    if distributed.is_main():
        atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    distributed.barrier()


class PhaseLoop(EpochLoop):
    """The epochs of one phase of a run (``search``, ``train``, ...), checkpointed to ``checkpoints/<phase>.pt``
    and appended to metrics.jsonl. Under torchrun a row's float values are averaged over the ranks
    (``distributed.mean_row``), rank 0 writes, and the lifecycle hooks are called on every rank (an observer that
    writes checks ``distributed.is_main()``)."""

    def __init__(self, run: Run, phase: str, epochs: int, get_state: Callable[[], dict],
                 set_state: Callable[[dict], None]):
        super().__init__(run.out_dir / "checkpoints" / f"{phase.replace('/', '_')}.pt", "checkpoint", epochs,
                         get_state, set_state, seed=run.spec.seed, stream=99, device=run.parts.device,
                         resume=run.resume, writes=distributed.is_main())
        self.run, self.phase = run, phase

    def resumed(self, checkpoint: dict[str, Any], start: int) -> None:
        ranks = checkpoint.get("world_size", 1)
        if ranks != distributed.world_size() and start < self.epochs:
            self.run.reporter.log(
                f"note: {self.path} was written by {ranks} process(es), this run has {distributed.world_size()}: "
                "each rank's share of every batch changes from here on, so the result may differ from an "
                "uninterrupted run")

    def begin(self, start: int) -> list[dict[str, Any]]:
        return _rewrite_metrics(self.run.out_dir / METRICS_FILE, self.phase, start)

    def row(self, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        return {"phase": self.phase, "epoch": epoch, **distributed.mean_row(row)}

    def record(self, row: dict[str, Any]) -> None:
        with open(self.run.out_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")

    def extra(self) -> dict[str, Any]:
        return {"world_size": distributed.world_size()}

    def ended(self, epoch: int, row: dict[str, Any]) -> None:
        distributed.barrier()
        self.run.reporter.epoch(self.phase, row)
        self.run.registry.hook.nascore_epoch_end(run=self.run, epoch=epoch, metrics=row)


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
    kept = [r for r in read_metrics(path) if r["phase"] != phase or r["epoch"] < start]
    distributed.barrier()  # every rank has read the file before rank 0 rewrites it
    if distributed.is_main() and os.path.lexists(path):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return [r for r in kept if r["phase"] == phase]
