"""The predictor family: a ``Predictor`` learns, from archs trained on a task, to predict how well an arch it has
not seen does on that task without training it (AIO-P's GNN, or a one-number baseline such as MACs or a zero-cost
proxy). Plugins contribute predictors through the ``nascore_predictors`` hook."""
from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .component import Component
from .progress import Progress, no_progress

if TYPE_CHECKING:
    from torch_geometric.data import Data

#: what a saved predictor's state may hold: what ``torch.load(weights_only=True)`` reads back
State = dict[str, Any]


@dataclass
class Sample:
    """One arch as a predictor sees it: its graph and simple numbers, and its label on one task when known."""

    graph: Data
    task: str
    macs: int
    params: int
    proxies: dict[str, float | None] = field(default_factory=dict)
    latency_ms: float | None = None
    label: float | None = None
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        """Giga floating-point operations of a forward pass: 2 per multiply-add, as AIO-P's FLOPs are counted."""
        return 2 * self.macs / 1e9


class Predictor(Component):
    """Predicts an arch's label on one task (the metric its performance dataset names, e.g. top-1) from a
    :class:`Sample`.

    ``nascore predictor fit`` makes one per task of the data, calls ``fit`` with that task's samples and saves
    ``state()``; ``eval`` and ``predict`` make a fresh one from the same config and call ``load_state`` first.
    """

    kind: ClassVar[str] = "predictor"

    @abstractmethod
    def fit(self, samples: Sequence[Sample], generator: torch.Generator, progress: Progress = no_progress) -> None:
        """Learn from ``samples`` (each with a label); ``generator`` is the only source of randomness."""

    @abstractmethod
    def predict(self, samples: Sequence[Sample]) -> list[float]:
        """The predicted label of each sample, in the label's own units."""

    @abstractmethod
    def state(self) -> State:
        """Everything ``load_state`` needs: tensors, numbers, strings, and lists and dicts of them."""

    @abstractmethod
    def load_state(self, state: State) -> None:
        """Restore what ``state()`` returned."""


def labels(samples: Sequence[Sample]) -> torch.Tensor:
    """The samples' labels as a float64 tensor; a sample without a finite label is an error."""
    values = [s.label for s in samples]
    bad = [i for i, v in enumerate(values) if v is None or not math.isfinite(v)]
    if bad:
        raise ValueError(f"samples {bad[:5]} have no finite label; a predictor fits labelled archs only")
    return torch.tensor(values, dtype=torch.float64)
