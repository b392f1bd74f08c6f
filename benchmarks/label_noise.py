"""How much of a performance dataset's labels is the arch, and how much the training seed, per training budget.

The first ``--archs`` archs of a collection's plan are trained twice, with training seeds 0 and 1, under each
budget given (``--budget "train.epochs=12 train.lr=0.1"``: overrides of the collection's spec); per task it
prints the Spearman and mean absolute difference between the two seeds' labels, the labels' spread, and the
training seconds per arch. A predictor cannot rank archs better than the seeds agree with each other.

    python benchmarks/label_noise.py perf/fbnet --archs 12 --budget "" --budget "train.epochs=12" --out perf/noise

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/label_noise.py perf/fbnet_12ep --archs 2 --workers 1 --out /tmp/noise \
        --budget "train.epochs=1 dataset.num_train=16 dataset.num_val=8"
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
from pathlib import Path

import torch

from nascore.executor import LocalExecutor
from nascore.performance.collect import Collector, run_plan
from nascore.performance.perfdata import Manifest, PerfDataset, write_manifest
from nascore.performance.predictors.scoring import score_text, scores
from nascore.spec import apply_overrides, validate_spec


def budget_manifest(source: Manifest, overrides: list[str], seed: int, n: int) -> Manifest:
    """The first ``n`` entries of ``source``'s plan under its spec with ``overrides`` and training ``seed``."""
    spec = apply_overrides(json.loads(json.dumps(source.spec)), [*overrides, f"seed={seed}"])
    validate_spec(spec)  # a typo in a budget is named before anything trains
    tasks = {t["name"]: source.tasks[t["name"]].model_dump() for t in spec["tasks"]}
    return Manifest.model_validate({**source.model_dump(), "spec": spec, "archs": n, "tasks": tasks,
                                    "plan": [e.model_dump() for e in source.plan[:n]]})


def trained(source: Manifest, overrides: list[str], seed: int, n: int, out: Path, workers: int) -> PerfDataset:
    """The first ``n`` archs of ``source``'s plan trained with the overridden spec and training ``seed``."""
    manifest = budget_manifest(source, overrides, seed, n)
    if (out / "dataset.json").exists():
        if PerfDataset.read(out).manifest != manifest:
            raise SystemExit(f"{out} holds another budget's archs; pass another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, manifest)
    done = {r.index for r in PerfDataset.read(out).records}
    run_plan(Collector(manifest), out, [i for i in range(n) if i not in done], LocalExecutor(workers))
    return PerfDataset.read(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a performance dataset folder (its spec and plan are used)")
    p.add_argument("--archs", type=int, default=12)
    p.add_argument("--budget", action="append", required=True,
                   help='spec overrides of one budget, e.g. "train.epochs=12 train.lr=0.1" ("" = the spec\'s)')
    p.add_argument("--out", default="perf/noise", help="folder for the retrained archs (one subfolder per run)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    source = PerfDataset.read(args.data).manifest
    rows = []
    for b, budget in enumerate(args.budget):
        overrides = shlex.split(budget)
        runs = [trained(source, overrides, seed, args.archs, Path(args.out) / f"budget{b}-seed{seed}", args.workers)
                for seed in (0, 1)]
        for task in runs[0].manifest.tasks:
            first, second = ([r.tasks[task] for r in run.records] for run in runs)
            pairs = [(x.label, y.label) for x, y in zip(first, second) if x.label is not None and y.label is not None]
            s = scores([y for _, y in pairs], [x for x, _ in pairs])
            seconds = statistics.mean(t.seconds for t in first + second)
            rows.append((budget or "(the spec's)", task, s["spearman"], s["mae"],
                         statistics.pstdev([x for x, _ in pairs]), seconds, len(pairs)))
    print("| budget | task | Spearman seed 0 vs 1 | mean abs. difference | label std | s per training | archs |")
    print("|---|---|---|---|---|---|---|")
    for budget, task, rho, mae, std, seconds, n in rows:
        print(f"| {budget} | {task} | {score_text(rho)} | {mae:.4f} | {std:.4f} | {seconds:.1f} | {n} |")


if __name__ == "__main__":
    main()
