"""An arch's network counted (params, multiply-adds, feature levels; ``nascore info``): with the heads the run it
was found in trains it with, when its spec is given, else with a classification head (none on a branched
backbone)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .arch import Arch, arch_space
from .parts import Parts
from .protocols import MultiTaskBackbone
from .registry import Registry, get_registry
from .rundir import SPEC_FILE
from .spec_model import RunSpec
from .strategy import owner_tasks
from .task import build_network
from .train import model_counts

#: classes of the classification head an arch is counted with when nothing gives them (as on ImageNet)
DEFAULT_CLASSES = 1000


@dataclass(frozen=True)
class ArchCounts:
    """What was counted: the arch's rows (decision, choice), the input size, the heads (task -> its classes, None
    for a task without classes; empty for a branched backbone, counted without heads, whose tasks ``branches``
    names), and the counts."""

    rows: list[tuple[str, str]]
    input_size: int
    heads: dict[str, int | None]
    branches: tuple[str, ...]
    params: int
    macs: int
    #: feature levels of the backbone: (channels, reduction)
    levels: list[tuple[int, int]]


def run_spec_file(arch_file: str | Path) -> Path | None:
    """The spec of the run directory an arch file sits in (a spec.yaml beside it), or None."""
    path = Path(arch_file).parent / SPEC_FILE
    return path if Path(arch_file).is_file() and path.is_file() else None


def count_arch(arch: Arch, ref: str, run_spec: RunSpec | None = None, input_size: int | None = None,
               num_classes: int | None = None, registry: Registry | None = None) -> ArchCounts:
    """Count ``arch`` (``ref``: its file or name, for messages) at ``input_size`` (else the run's dataset's
    image_size, else its space's input_size), with a ``num_classes`` classification head when given, else the
    heads of ``run_spec``'s tasks on its dataset (those the arch owns), else a ``DEFAULT_CLASSES`` one."""
    registry = registry or get_registry()
    parts = Parts.build(run_spec, torch.device("cpu")) if run_spec is not None else None  # counted on the CPU
    info = parts.info if parts is not None else None
    size = input_size or (info.image_size if info is not None else None)
    space = arch_space(arch, ref, registry, input_size=size)
    size = size or space.input_size
    backbone = space.build(arch)
    branches: tuple[str, ...] = ()
    if num_classes is None and parts is not None:  # the heads the run trains (see train.arch_network)
        tasks = owner_tasks(parts.tasks, arch.task)
        net = build_network(backbone, tasks, info)
        heads = {t.name: t.num_classes(info) if t.target in info.num_classes else None for t in tasks}
    elif isinstance(backbone, MultiTaskBackbone):  # its heads are its tasks', not a classifier
        net, heads, branches = backbone, {}, tuple(backbone.tasks)
    else:
        classes = num_classes or DEFAULT_CLASSES
        net = build_network(backbone, [registry.get("task", "classification")({"num_classes": classes})], None)
        heads = {"classification": classes}
    counts = model_counts(net, info.in_channels if info else 3, size)
    return ArchCounts(space.describe(arch), size, heads, branches, counts["params"], counts["macs"],
                      [(f["num_chs"], f["reduction"]) for f in backbone.feature_info])
