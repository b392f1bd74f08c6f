"""One arch's label predicted by a predictor file (``nascore predictor predict``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nascore.arch import arch_space, resolve_arch
from nascore.data import loader
from nascore.errors import NascoreError
from nascore.performance.collect import NASWOT_BATCH
from nascore.performance.predictors.samples import measured_sample
from nascore.registry import get_registry
from nascore.spec import validate_component
from nascore.spec_model import ComponentSpec

from .file import PredictorFile


@dataclass(frozen=True)
class Prediction:
    """``value`` of ``label`` predicted for the arch ``name`` on ``task``, whose network has ``macs``
    multiply-adds at the file's input size."""

    name: str
    task: str
    label: str
    value: float
    macs: float


def predict_arch(file: PredictorFile, ref: str, task: str | None = None) -> Prediction:
    """Predict the arch ``ref`` (a file or a named arch) on ``task`` (None: the file's only task), measured as the
    file's archs were: its graph, counts and NASWOT score on a batch of the file's dataset."""
    name = task or (next(iter(file.tasks)) if len(file.tasks) == 1 else None)
    if name is None or name not in file.tasks:
        raise NascoreError(f"--task {task or '(none)'}: the predictor file predicts "
                           f"{', '.join(file.tasks)}; name one of them")
    arch = resolve_arch(ref)
    space = arch_space(arch, ref, input_size=file.input_size)
    block = dict(file.dataset)
    dataset_name = block.pop("name")
    cls = get_registry().get("dataset", dataset_name)
    dataset = ComponentSpec("dataset", dataset_name, cls, validate_component(cls, block, "dataset")).create()
    images, _ = next(iter(loader(dataset.split("train"), NASWOT_BATCH, dataset.collate, shuffle=True)))
    torch.manual_seed(0)
    sample = measured_sample(space.build(arch), file.input_size, file.in_channels, images, name, arch.choices)
    t = file.tasks[name]
    return Prediction(arch.name or ref, name, t.label, t.predictor.predict([sample])[0], sample.macs)
