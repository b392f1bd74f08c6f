"""What ``nascore export`` writes: a network with its arch and input description (``ExportSource``), flattened to
named output tensors (``Flat``) as every exporter and runtime takes them."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nascore.arch import Arch
from nascore.errors import NascoreError

if TYPE_CHECKING:
    from nascore.parts import Parts
    from nascore.spec_model import RunSpec
    from nascore.task import Task


@dataclass
class ExportSource:
    """What to export: the network (eval mode, CPU), its arch, input size and channels, normalisation."""

    model: nn.Module
    arch: Arch
    input_size: int
    in_channels: int
    trained: bool
    described: str  # e.g. "runs/x/train_model.pt (trained weights, heads: classification)"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    data: Data | None = None  # a trained model's run data (what int8 calibrates and validates on)


@dataclass
class Data:
    """The run a trained model comes from: its spec, the model's tasks and the training batch size. Its parts (the
    dataset and its splits) are built when first asked for: only ``--int8`` calibrates and validates on them, and a
    run's spec may declare a dataset far larger than a float32 export needs to read or generate."""

    spec: RunSpec
    tasks: list[Task]
    batch_size: int

    @cached_property
    def parts(self) -> Parts:
        from nascore.parts import Parts

        return Parts.build(self.spec, torch.device("cpu"))


def flatten(out: Any, prefix: str = "") -> list[tuple[str, Tensor]]:
    """Nested dicts / lists / tuples of tensors as (dotted name, tensor) pairs, in order."""
    if isinstance(out, Tensor):
        return [(prefix or "output", out)]
    if isinstance(out, dict):
        items = out.items()
    elif isinstance(out, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(out))
    else:
        raise NascoreError(f"the network returns a {type(out).__name__}; only tensors, lists and dicts export")
    return [pair for key, value in items for pair in flatten(value, f"{prefix}.{key}" if prefix else key)]


def unflatten(template: Any, tensors: Iterator[Tensor]) -> Any:
    """``tensors`` (in ``flatten`` order) put back into the nesting of ``template``, a network output."""
    if isinstance(template, Tensor):
        return next(tensors)
    if isinstance(template, dict):
        return {key: unflatten(value, tensors) for key, value in template.items()}
    return type(template)(unflatten(value, tensors) for value in template)


class Flat(nn.Module):
    """``model`` returning a tuple of tensors (what every exporter takes); ``names`` from a sample call."""

    def __init__(self, model: nn.Module, sample: Tensor):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.names = [name for name, _ in flatten(model(sample))]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(t for _, t in flatten(self.model(x)))
