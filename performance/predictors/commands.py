"""``nascore predictor fit | eval | predict | adapt | transfer``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from nascore.errors import NascoreError
from nascore.performance.perfdata import PerfDataset
from nascore.progress import Reporter
from nascore.spec import apply_overrides


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fit(args: argparse.Namespace) -> int:
    from .fitting import fit_file

    datasets = [PerfDataset.read(d) for d in args.data]
    reporter = Reporter()
    start = time.perf_counter()
    file = fit_file(datasets, args.predictor, apply_overrides({}, args.overrides), args.holdout, args.seed,
                    progress=reporter.progress)
    file.save(args.out)
    for task, t in file.tasks.items():
        print(f"{task}: {args.predictor} and {len(t.baselines)} baselines fitted on {len(t.fitted)} archs "
              f"(label {t.label})")
    print(f"written: {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from .file import PredictorFile
    from .fitting import evaluate_file
    from .scoring import scatter_plot

    file = PredictorFile.load(args.predictor_file)
    result = evaluate_file(file, [PerfDataset.read(d) for d in args.data])
    reporter = Reporter()
    panels = []
    for task, entry in result.items():
        if not entry["held_out"]:
            print(f"{task}: every arch of the datasets was used in fitting; nothing to evaluate on")
            continue
        rows = [(name, str(s["n"]), _fmt(s["spearman"]), _fmt(s["kendall"]), _fmt(s["mae"], 4))
                for name, s in entry["scores"].items()]
        reporter.table(f"{task}: {entry['held_out']} archs not used in fitting ({entry['excluded']} used in "
                       f"fitting, left out), label {entry['label']}", rows, ("predictor", "archs", "Spearman", "Kendall tau", "MAE"))
        panels.append({"title": f"{task}: {file.name}", "label": entry["label"].rsplit("/", 1)[-1],
                       "predicted": entry["predicted"][file.name], "true": entry["true"],
                       "spearman": entry["scores"][file.name]["spearman"]})
    if panels:
        plot = Path(args.plot) if args.plot else Path(args.predictor_file).with_suffix(".eval.png")
        scatter_plot(plot, panels)
        print(f"scatter plot: {plot}")
    return 0


def predict(args: argparse.Namespace) -> int:
    import torch

    from nascore.arch import arch_space, resolve_arch
    from nascore.data import loader
    from nascore.performance.collect import NASWOT_BATCH
    from nascore.predictor import measured_sample
    from nascore.spec import validate_component
    from nascore.spec_model import ComponentSpec

    from .file import PredictorFile

    file = PredictorFile.load(args.predictor_file)
    task = args.task or (next(iter(file.tasks)) if len(file.tasks) == 1 else None)
    if task is None or task not in file.tasks:
        raise NascoreError(f"--task {args.task or '(none)'}: the predictor file predicts "
                           f"{', '.join(file.tasks)}; name one of them")
    arch = resolve_arch(args.arch)
    space = arch_space(arch, args.arch, input_size=file.input_size)
    from nascore.registry import get_registry

    block = dict(file.dataset)
    name = block.pop("name")
    cls = get_registry().get("dataset", name)
    dataset = ComponentSpec("dataset", name, cls, validate_component(cls, block, "dataset")).create()
    images, _ = next(iter(loader(dataset.split("train"), NASWOT_BATCH, dataset.collate, shuffle=True)))
    torch.manual_seed(0)
    sample = measured_sample(space.build(arch), file.input_size, file.in_channels, images, task, arch.choices)
    t = file.tasks[task]
    value = t.predictor.predict([sample])[0]
    print(f"{arch.name or args.arch} on {task}: predicted {t.label} = {value:.4f} ({file.name}; "
          f"{sample.macs / 1e6:.2f} M multiply-adds at {file.input_size}x{file.input_size})")
    return 0


def adapt(args: argparse.Namespace) -> int:
    from .adapters import adapt_file, summary
    from .file import PredictorFile

    file = PredictorFile.load(args.predictor_file)
    datasets = [PerfDataset.read(d) for d in args.data]
    start = time.perf_counter()
    out = adapt_file(file, f"predictor file {args.predictor_file}", datasets, args.task, args.base_task,
                     apply_overrides({}, args.overrides), args.seed, Reporter().progress)
    out.save(args.out)
    for task, t in out.tasks.items():
        print(f"{task}: aio-p-adapters, {summary(t.predictor)}")
    print(f"written: {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


def transfer(args: argparse.Namespace) -> int:
    from .adapters import summary, transfer_file
    from .file import PredictorFile

    file = PredictorFile.load(args.predictor_file)
    datasets = [PerfDataset.read(d) for d in args.data]
    start = time.perf_counter()
    out = transfer_file(file, f"predictor file {args.predictor_file}", datasets, args.labels, args.task,
                        args.base_task, args.train, apply_overrides({}, args.overrides), args.seed,
                        progress=Reporter().progress)
    out.save(args.out)
    for task, t in out.tasks.items():
        print(f"{task}: aio-p-adapters ({summary(t.predictor)}) fine-tuned ({args.train}) and {len(t.baselines)} "
              f"baselines fitted on {len(t.fitted)} drawn archs (label {t.label}, seed {args.seed})")
    print(f"written: {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0
