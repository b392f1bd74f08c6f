"""The parts of a run, built once from its spec: device, dataset and its splits, tasks, space, seed, precision. A
run's search and training (``Run.parts``), the search strategies (``SearchContext.parts``), the archs a standalone
strategy trains elsewhere, a performance collection and its pseudo-labels all take them from here."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .dataset import DataInfo, Dataset
from .errors import NascoreError
from .precision import Precision
from .space import SearchSpace
from .spec_model import AmpConfig, RunSpec
from .task import Task


@dataclass
class Parts:
    """What every phase of a run works with. Plain data that pickles, so an executor's worker gets it whole."""

    device: torch.device
    dataset: Dataset
    info: DataInfo
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    tasks: list[Task]
    space: SearchSpace  # the spec's, which a search searches
    seed: int
    amp: AmpConfig | None = None
    channels_last: bool = False

    @classmethod
    def build(cls, spec: RunSpec, device: torch.device | None = None) -> Parts:
        """The parts of ``spec``, on ``device`` (default: the spec's, checked to be there)."""
        dataset = spec.dataset.create()
        return cls(device if device is not None else resolve_device(spec.device), dataset, dataset.info(),
                   dataset.split("train"), dataset.split("val"), [t.create() for t in spec.tasks], spec.space.create(),
                   spec.seed, spec.amp, spec.channels_last)

    @property
    def collate(self) -> Callable[[list], Any]:
        return self.dataset.collate

    def precision(self) -> Precision:
        """A new ``Precision`` of the spec's ``amp`` and ``channels_last``: one per phase (and per arch trained),
        so that each training starts with its own loss scale."""
        return Precision(self.amp, self.channels_last, self.device)


def resolve_device(name: str) -> torch.device:
    """The spec's ``device``, refused (naming the field) when torch does not know it or CUDA is missing."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise NascoreError(f"device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NascoreError("device: 'cuda' was asked for but CUDA is not available on this machine")
    return device
