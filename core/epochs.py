"""The one epoch loop of everything that checkpoints per epoch: a run's search and training phases
(``rundir.PhaseLoop``) and the shared phases of pseudo-labels. It runs the epochs its checkpoint has not done yet,
each reseeded from (seed, epoch, stream) so that a resumed phase ends exactly as an uninterrupted one, and writes
the checkpoint atomically after each epoch: ``{"epoch": the last epoch done, "seconds": the phase's time over every
run of it, "state": ..., **identity}``."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .data import epoch_seed
from .errors import NascoreError
from .fileio import load_checkpoint, save_checkpoint
from .progress import Progress, no_progress


class EpochLoop:
    """``epochs`` epochs of one phase, checkpointed to ``path`` (``what`` names it in messages). With ``resume``, an
    existing checkpoint is continued (its ``identity`` entries must equal this loop's: what the phase was started
    for), else epochs start at 0.
    ``writes``: whether this process writes the checkpoint (under torchrun, rank 0 alone); ``progress``: a bar over
    the epochs. Subclasses shape the rows and say what happens with each (``row``, ``record``, ``ended``)."""

    def __init__(self, path: Path, what: str, epochs: int, get_state: Callable[[], dict[str, Any]],
                 set_state: Callable[[dict[str, Any]], None], *, seed: int, stream: int, device: torch.device,
                 resume: bool = True, identity: dict[str, Any] | None = None, writes: bool = True,
                 progress: Progress = no_progress):
        self.path, self.what, self.epochs = path, what, epochs
        self.get_state, self.set_state = get_state, set_state
        self.seed, self.stream, self.device = seed, stream, device
        self.resume, self.identity, self.writes, self.progress = resume, identity or {}, writes, progress
        self.seconds = 0.0

    def start_epoch(self) -> int:
        """The first epoch to run: 0, or the one after the checkpoint's (whose state is then loaded)."""
        if not (self.resume and os.path.lexists(self.path)):  # a dangling symlink or a FIFO is refused
            return 0
        checkpoint = load_checkpoint(self.path, map_location=self.device, what=self.what)
        if any(checkpoint.get(k) != v for k, v in self.identity.items()):
            raise NascoreError(f"{self.path} is a {self.what} of other options (spec, seed or epochs); pass another "
                               "--out")
        try:
            self.set_state(checkpoint["state"])
            start = int(checkpoint["epoch"]) + 1
            self.seconds = float(checkpoint.get("seconds", 0.0))
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise NascoreError(f"{self.what} {self.path} does not match this run: {exc}") from None
        self.resumed(checkpoint, start)
        return start

    def __call__(self, run_epoch: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
        """Run the epochs not done yet; returns the phase's rows (those of earlier runs of it, as ``begin`` gives)."""
        start = self.start_epoch()
        rows = self.begin(start)
        with self.progress(self.epochs - start, f"{self.what}, {self.epochs} epochs") as advance:
            for epoch in range(start, self.epochs):
                torch.manual_seed(epoch_seed(self.seed, epoch, stream=self.stream))
                began = time.perf_counter()
                row = self.row(epoch, run_epoch(epoch))
                self.seconds += time.perf_counter() - began
                if self.writes:
                    self.record(row)
                    save_checkpoint({"epoch": epoch, "seconds": self.seconds, **self.identity, **self.extra(),
                                     "state": self.get_state()}, self.path)
                self.ended(epoch, row)
                rows.append(row)
                advance()
        return rows

    # -- what subclasses shape ---------------------------------------------------------------------------------
    def resumed(self, checkpoint: dict[str, Any], start: int) -> None:
        """Called when a checkpoint was loaded, before the first epoch runs."""

    def begin(self, start: int) -> list[dict[str, Any]]:
        """The rows of the epochs before ``start`` (none by default)."""
        return []

    def row(self, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
        """The row of an epoch as ``run_epoch`` returned it, shaped for ``record`` and the returned rows."""
        return {"epoch": epoch, **row}

    def record(self, row: dict[str, Any]) -> None:
        """Write the row down before the checkpoint (by the process that writes)."""

    def extra(self) -> dict[str, Any]:
        """Entries of the checkpoint besides the loop's own."""
        return {}

    def ended(self, epoch: int, row: dict[str, Any]) -> None:
        """Called on every process after an epoch's row and checkpoint were written."""
