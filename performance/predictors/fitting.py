"""Fitting predictors on performance datasets and scoring them on archs they were not fitted on."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nascore.errors import NascoreError
from nascore.performance.perfdata import PerfDataset
from nascore.predictor import Sample
from nascore.progress import Progress, no_progress
from nascore.registry import Registry, get_registry
from nascore.spec import validate_options

from .baselines import Baseline
from .file import PredictorFile, TaskPredictors, arch_key
from .samples import labelled_samples
from .scoring import scores


def _key(sample: Sample, space: str) -> str:
    return arch_key(space, sample.choices)


def task_samples(datasets: Sequence[PerfDataset]) -> dict[str, tuple[dict[str, Any], list[tuple[Sample, str]]]]:
    """Task -> (its label definition, its labelled samples with their arch keys), over every dataset; a task must
    have the same label in every dataset."""
    out: dict[str, tuple[dict[str, Any], list[tuple[Sample, str]]]] = {}
    for ds in datasets:
        space = ds.manifest.space.name
        for task, label in ds.manifest.tasks.items():
            definition = label.model_dump()
            if task in out and out[task][0] != definition:
                raise NascoreError(f"task '{task}' has label {definition['label']} in {ds.directory} but "
                                   f"{out[task][0]['label']} in another dataset; a predictor learns one label per "
                                   "task")
            pairs = out.setdefault(task, (definition, []))[1]
            pairs.extend((s, _key(s, space)) for s in labelled_samples(ds, task))
    return out


def baseline_names(registry: Registry) -> list[str]:
    """Every installed baseline predictor (a subclass of ``Baseline``): the one-number predictors compared with."""
    return [n for n in registry.names("predictor") if issubclass(registry.get("predictor", n), Baseline)]


def fit_file(datasets: Sequence[PerfDataset], name: str, options: dict[str, Any], holdout: float = 0.0,
             seed: int = 0, registry: Registry | None = None, progress: Progress = no_progress) -> PredictorFile:
    """One ``name`` predictor and every baseline per task, fitted on the same archs of ``datasets`` (all, or all
    but a seeded ``holdout`` fraction of each task's)."""
    registry = registry or get_registry()
    if not 0 <= holdout < 1:
        raise NascoreError(f"--holdout must be in [0, 1), not {holdout}")
    cls = registry.get("predictor", name)
    config = validate_options(cls, options)
    first = datasets[0].manifest
    for ds in datasets[1:]:
        m = ds.manifest
        if (m.input_size, m.in_channels) != (first.input_size, first.in_channels):
            raise NascoreError(f"{ds.directory} measured archs at {m.in_channels}x{m.input_size}x{m.input_size}, "
                               f"{datasets[0].directory} at {first.in_channels}x{first.input_size}x"
                               f"{first.input_size}; one predictor is fitted on one input size")
    tasks: dict[str, TaskPredictors] = {}
    for task, (label, pairs) in task_samples(datasets).items():
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(pairs), generator=g).tolist()
        fit_pairs = [pairs[i] for i in order[round(holdout * len(pairs)):]]
        if len(fit_pairs) < 2:
            raise NascoreError(f"task '{task}': {len(fit_pairs)} labelled archs to fit on; at least 2 are needed "
                               f"(the datasets hold {len(pairs)}; --holdout {holdout})")
        samples = [s for s, _ in fit_pairs]
        predictor = cls(config)
        predictor.fit(samples, g, progress)
        baselines = {}
        for b in baseline_names(registry):
            baselines[b] = registry.get("predictor", b)()
            baselines[b].fit(samples, g)
        tasks[task] = TaskPredictors(label["label"], label["higher_is_better"], predictor, baselines,
                                     {k for _, k in fit_pairs})
    return PredictorFile(name, config.model_dump(mode="json"), first.input_size, first.in_channels,
                         first.spec["dataset"], tasks)


def evaluate_file(file: PredictorFile, datasets: Sequence[PerfDataset]) -> dict[str, dict[str, Any]]:
    """Per task of the file that the datasets label: scores of the predictor and of each baseline on the archs
    it was not fitted on (``held_out``, ``excluded``: how many were fitted on), and the predictions."""
    out: dict[str, dict[str, Any]] = {}
    found = task_samples(datasets)
    for task, t in file.tasks.items():
        if task not in found:
            continue
        pairs = found[task][1]
        samples = [s for s, k in pairs if k not in t.fitted]
        true = [float(s.label) for s in samples]
        entry: dict[str, Any] = {"label": t.label, "held_out": len(samples), "excluded": len(pairs) - len(samples),
                                 "true": true, "predicted": {}, "scores": {}}
        if samples:
            for name, predictor in {file.name: t.predictor, **t.baselines}.items():
                predicted = predictor.predict(samples)
                entry["predicted"][name] = predicted
                entry["scores"][name] = scores(predicted, true)
        out[task] = entry
    if not out:
        raise NascoreError(f"the datasets label none of the predictor's tasks ({', '.join(file.tasks)})")
    return out
