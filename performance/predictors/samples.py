"""Archs as a predictor sees them (``nascore.predictor.Sample``): the records of a performance dataset, and untrained
backbones measured as ``nascore bench collect`` measures its archs."""
from __future__ import annotations

import torch

from nascore.performance.collect import measure_arch
from nascore.performance.graph import graph_from_record
from nascore.performance.perfdata import PerfDataset, Record
from nascore.predictor import Sample


def record_sample(record: Record, task: str) -> Sample:
    """A performance dataset's record as a sample of ``task`` (labelled when the record has a label for it)."""
    return Sample(graph_from_record(record.graph.model_dump()), task, record.macs, record.params,
                  dict(record.proxies), record.latency_ms,
                  record.tasks[task].label if task in record.tasks else None, dict(record.arch.choices))


def measured_sample(backbone: torch.nn.Module, input_size: int, in_channels: int, images: torch.Tensor, task: str,
                    choices: dict[str, str]) -> Sample:
    """An untrained backbone as a predictor sees it, measured as ``nascore bench collect`` measures its archs
    (``nascore.performance.collect.measure_arch``; NASWOT on ``images``); no label."""
    measured = measure_arch(backbone, input_size, in_channels, images)
    return Sample(graph_from_record(measured["graph"]), task, measured["macs"], measured["params"],
                  measured["proxies"], choices=dict(choices))


def labelled_samples(dataset: PerfDataset, task: str) -> list[Sample]:
    """The archs of a performance dataset that have a label for ``task``, as samples."""
    return [record_sample(r, task) for r in dataset.records if task in r.tasks and r.tasks[task].label is not None]
