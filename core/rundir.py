"""The run directory: the resolved spec, metrics.jsonl, checkpoints (written atomically), the arch files and
summary.json. A run's epochs are checkpointed as they end; every epoch reseeds from (seed, epoch), so a resumed
run ends exactly like an uninterrupted one. Under torchrun rank 0 alone writes the directory (the other ranks hold
the same state: ``distributed``), the ranks meeting at a barrier after each epoch's writes."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from . import distributed
from .data import epoch_seed
from .errors import NascoreError
from .fileio import (
    METRICS_MAX_BYTES,
    SPEC_MAX_BYTES,
    atomic_write_text,
    check_user_file,
    load_checkpoint,
    load_user_yaml,
    parse_user_json,
    read_user_text,
    save_checkpoint,
)
from .strategy import SHARED

if TYPE_CHECKING:
    from .run import Run
    from .space import SearchSpace
    from .spec_model import RunSpec

SPEC_FILE, METRICS_FILE, SUMMARY_FILE = "spec.yaml", "metrics.jsonl", "summary.json"


def check_dir(spec: RunSpec, out_dir: Path, resume: bool) -> None:
    """Refuse a directory the run cannot use: resuming, one that holds no run of ``spec`` or whose metrics or
    checkpoints are broken (checked before anything is written); else one that is not empty."""
    spec_path = out_dir / SPEC_FILE
    if resume:
        if not os.path.lexists(spec_path):
            raise NascoreError(f"--resume: {out_dir} holds no run ({SPEC_FILE} is missing)")
        if load_user_yaml(spec_path, "--resume: the run's spec", SPEC_MAX_BYTES) != spec.dump():
            raise NascoreError(f"--resume: the spec differs from the one the run in {out_dir} started with "
                               f"({spec_path}); resume with the same spec and --set options")
        read_metrics(out_dir / METRICS_FILE)
        for ckpt in sorted((out_dir / "checkpoints").glob("*.pt")):
            check_user_file(ckpt, "checkpoint")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise NascoreError(f"output directory {out_dir} is not empty; pass --resume to continue that run "
                           "or choose another --out")


def create_dir(spec: RunSpec, out_dir: Path) -> bool:
    """Make ``out_dir`` (when missing) and write the resolved spec in it; returns whether it made the directory."""
    resolved = yaml.safe_dump(spec.dump(), sort_keys=False)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SPEC_FILE, resolved)
    return created


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


class EpochLoop:
    """Runs epochs of one phase, appending to metrics.jsonl and checkpointing after each epoch. Under torchrun a
    row's float values are averaged over the ranks (``distributed.mean_row``) and the lifecycle hooks are called on
    every rank (an observer that writes checks ``distributed.is_main()``)."""

    def __init__(self, run: Run, phase: str, epochs: int, get_state: Callable[[], dict],
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
            start = int(state["epoch"]) + 1
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise NascoreError(f"checkpoint {self.ckpt} does not match this run: {exc}") from None
        ranks = state.get("world_size", 1)
        if ranks != distributed.world_size() and start < self.epochs:
            self.run.reporter.log(
                f"note: {self.ckpt} was written by {ranks} process(es), this run has {distributed.world_size()}: "
                "each rank's share of every batch changes from here on, so the result may differ from an "
                "uninterrupted run")
        return start

    def __call__(self, run_epoch: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
        start = self.start_epoch()
        rows = _rewrite_metrics(self.run.out_dir / METRICS_FILE, self.phase, start)
        for epoch in range(start, self.epochs):
            torch.manual_seed(epoch_seed(self.run.spec.seed, epoch, stream=99))
            row = {"phase": self.phase, "epoch": epoch, **distributed.mean_row(run_epoch(epoch))}
            if distributed.is_main():
                with open(self.run.out_dir / METRICS_FILE, "a") as f:
                    f.write(json.dumps(row) + "\n")
                save_checkpoint({"epoch": epoch, "world_size": distributed.world_size(), "state": self.get_state()},
                                self.ckpt)
            distributed.barrier()
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
    kept = [r for r in read_metrics(path) if r["phase"] != phase or r["epoch"] < start]
    distributed.barrier()  # every rank has read the file before rank 0 rewrites it
    if distributed.is_main() and os.path.lexists(path):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return [r for r in kept if r["phase"] == phase]
