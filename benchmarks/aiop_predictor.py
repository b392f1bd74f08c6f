"""AIO-P part 1 benchmark: how well the ``aio-p`` predictor ranks archs it was not fitted on, against MACs, params
and zero-cost proxies on the same archs, and how noisy the labels themselves are.

Input: performance datasets collected with ``nascore bench collect`` from the specs in ``benchmarks/perfdata``:

    nascore bench collect benchmarks/perfdata/fbnet.yaml --archs 150 --out perf/fbnet --workers 2
    nascore bench collect benchmarks/perfdata/fbnetv2.yaml --archs 150 --out perf/fbnetv2 --workers 2
    python benchmarks/aiop_predictor.py perf/fbnet perf/fbnetv2 --noise 30 --splits 5

1. Label noise: the first ``--noise`` archs of the first dataset trained again with another training seed (same
   budget); Spearman between the two seeds' labels is the ceiling any predictor can reach on these labels.
2. Per dataset and task, and on all datasets pooled: ``--splits`` random splits (``--holdout`` of the archs
   held out), ``aio-p`` and every baseline fitted on the rest (``nascore.performance.predictors.fitting.fit_file``) and
   scored on the held-out archs; mean and standard deviation over the splits.

Prints a Markdown table (BENCHMARKS.md, "AIO-P performance predictor") and writes the numbers as JSON.

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless), on the shipped collections
(``tar xzf benchmarks/perfdata/<name>.tar.gz -C perf``):

    python benchmarks/aiop_predictor.py perf/fbnet_12ep perf/fbnetv2_12ep --splits 1 --set epochs=1 --noise 1 \
        --noise-set train.epochs=1 --noise-set dataset.num_train=16 --noise-set dataset.num_val=8 \
        --noise-out /tmp/noise --workers 1 --json /tmp/aiop_predictor.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from label_noise import trained  # benchmarks/ is the script's folder, so on sys.path

from nascore.performance.perfdata import PerfDataset
from nascore.performance.predictors.fitting import evaluate_file, fit_file
from nascore.performance.predictors.samples import labelled_samples
from nascore.performance.predictors.scoring import score_text, scores


def noise(dataset: PerfDataset, n: int, out: Path, workers: int, overrides: list[str]) -> dict:
    """Train the dataset's first ``n`` archs again with training seed + 1 (and ``overrides`` of the dataset's spec);
    per task, the two trainings' agreement."""
    m = dataset.manifest
    again = {r.index: r for r in trained(m, overrides, m.spec["seed"] + 1, n, out, workers).records}
    first = {r.index: r for r in dataset.records if r.index < n}
    result = {}
    for task in m.tasks:
        a = [first[i].tasks[task].label for i in range(n)]
        b = [again[i].tasks[task].label for i in range(n)]
        result[task] = {**scores(b, a), "label_std": statistics.pstdev(a)}
    return result


def splits(datasets: list[PerfDataset], n_splits: int, holdout: float, options: dict) -> dict:
    """Per task: for each predictor, every split's scores on the held-out archs."""
    out: dict[str, dict[str, list[dict]]] = {}
    for seed in range(n_splits):
        file = fit_file(datasets, "aio-p", options, holdout=holdout, seed=seed)
        for task, entry in evaluate_file(file, datasets).items():
            for name, s in entry["scores"].items():
                out.setdefault(task, {}).setdefault(name, []).append(s)
    return out


def summary(runs: list[dict]) -> dict:
    def stat(key: str) -> tuple[float, float]:
        values = [r[key] for r in runs if r[key] is not None]
        return (statistics.mean(values), statistics.pstdev(values)) if values else (float("nan"), 0.0)

    return {"spearman": stat("spearman"), "kendall": stat("kendall"), "mae": stat("mae"), "n": runs[0]["n"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="performance dataset folders")
    p.add_argument("--splits", type=int, default=5, help="random splits (0: only the label noise)")
    p.add_argument("--holdout", type=float, default=0.3)
    p.add_argument("--noise", type=int, default=30, help="archs retrained with another seed (0: skip)")
    p.add_argument("--noise-out", default="perf/noise", help="where the retrained archs are collected")
    p.add_argument("--noise-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the retraining's spec (a smoke run's tiny budget; the labels then differ by "
                        "budget as well as by seed)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="aio-p option (e.g. epochs=300)")
    p.add_argument("--json", default="aiop_predictor.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    from nascore.spec import apply_overrides

    options = apply_overrides({}, args.options)
    datasets = [PerfDataset.read(d) for d in args.data]
    report: dict = {"datasets": {}, "noise": None}
    for ds in datasets:
        seconds = sum(t.seconds for r in ds.records for t in r.tasks.values())
        report["datasets"][str(ds.directory)] = {
            "space": ds.manifest.space.name, "archs": len(ds.records),
            "train_seconds_per_arch": seconds / max(len(ds.records), 1),
            "labels": {task: [min(s.label for s in labelled_samples(ds, task)),
                              max(s.label for s in labelled_samples(ds, task))] for task in ds.manifest.tasks}}
    if args.noise:
        report["noise"] = noise(datasets[0], args.noise, Path(args.noise_out), args.workers, args.noise_set)
    groups = {ds.manifest.space.name: [ds] for ds in datasets} if args.splits else {}
    if len(datasets) > 1 and args.splits:
        groups["pooled"] = datasets
    report["splits"] = {}
    for group, members in groups.items():
        start = time.perf_counter()
        report["splits"][group] = {task: {name: summary(runs) for name, runs in by_name.items()}
                                   for task, by_name in splits(members, args.splits, args.holdout, options).items()}
        report["splits"][group]["seconds"] = time.perf_counter() - start
    Path(args.json).write_text(json.dumps(report, indent=1))

    print("| archs | task | predictor | Spearman | Kendall tau | MAE |")
    print("|---|---|---|---|---|---|")
    for group, tasks in report["splits"].items():
        for task, by_name in tasks.items():
            if task == "seconds":
                continue
            for name, s in sorted(by_name.items(), key=lambda kv: -kv[1]["spearman"][0]):
                print(f"| {group} ({s['n']} held out) | {task} | {name} | {s['spearman'][0]:.3f} +- "
                      f"{s['spearman'][1]:.3f} | {s['kendall'][0]:.3f} +- {s['kendall'][1]:.3f} | "
                      f"{s['mae'][0]:.4f} |")
    if report["noise"]:
        for task, s in report["noise"].items():
            print(f"label noise, {task}: Spearman between training seeds {score_text(s['spearman'])}, Kendall "
                  f"{score_text(s['kendall'])}, mean |difference| {s['mae']:.4f} (label std {s['label_std']:.4f}) over "
                  f"{s['n']} archs")


if __name__ == "__main__":
    main()
