"""Search against random (issue "AIO-P part 2"; BENCHMARKS.md, "Search against random"): do the archs a search
finds beat random archs of equal or lower cost, trained with the same budget, by more than the seed spread?

Input: the ``nascore compare`` folders of the specs in benchmarks/search (random, predictor-guided, DNAS; each
over 3 seeds), and the 150-arch FBNet collection (benchmarks/perfdata/fbnet_12ep.tar.gz), whose archs are random
archs of the same space trained with the same data and budget (seed 0):

    nascore predictor fit perf/fbnet_12ep --out runs/fbnet_12ep.predictor.pt
    nascore compare benchmarks/search/random.yaml benchmarks/search/dnas.yaml --seeds 3 --out cmp_a
    nascore compare benchmarks/search/predictor.yaml --seeds 3 --out cmp_b
    python benchmarks/search_vs_random.py cmp_a cmp_b --collection perf/fbnet_12ep

On a task without a collection (saliency), the archs the ``random`` searches trained are the pool (one or more
compare folders of random specs):

    python benchmarks/search_vs_random.py cmp_e cmp_f --random-runs cmp_e/saliency_random --task saliency

For each strategy: the found archs' trained top-1 (mean +- std over seeds), backbone multiply-adds, and against
the collection: the best collection arch of equal or lower backbone MACs, and the expected best of ``k`` random
archs within the same budget (``k`` = the archs the strategy trained, plus those its predictor was fitted on;
resampled 10,000 times from the collection's archs under the budget; ``--k`` sets it). Prints a Markdown table;
``--json`` writes the numbers. With ``--retrained`` the found archs' values are those of ``nascore train`` runs of
them (another seed, or another budget: then the collection must be trained with that budget too):

    nascore train cmp_a/dnas/seed0/arch.json --spec benchmarks/search/random.yaml --set seed=10 --out rt/dnas0
    python benchmarks/search_vs_random.py cmp_a --collection perf/fbnet_12ep --retrained rt/dnas0

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    nascore compare benchmarks/search/random.yaml --seeds 1 --out /tmp/cmp --set dataset.num_train=16 \
        --set dataset.num_val=8 --set strategy.archs=2 --set strategy.train.epochs=1 --set train.epochs=1
    python benchmarks/search_vs_random.py /tmp/cmp --collection perf/fbnet_12ep --json /tmp/search_vs_random.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from nascore.costs.flops import FlopsCost
from nascore.performance.perfdata import PerfDataset
from nascore.protocols import CostEstimate
from nascore.registry import get_registry
from nascore.spec import load_spec
from nascore.spec_model import RunSpec


def macs_table(spec: RunSpec) -> CostEstimate:
    """The spec's supernet priced in multiply-adds: an arch's backbone MACs as the collection's records count them
    (``.of_choices(choices)``). Built once per spec: pricing a supernet takes seconds."""
    space = spec.space.create()
    return space.supernet().price(FlopsCost(), space.input_size, spec.dataset.create().info().in_channels)


def best_of_k(labels: list[float], k: int, draws: int = 10_000, seed: int = 0) -> tuple[float, float] | None:
    """Mean and standard deviation of the best of ``k`` labels drawn without replacement (of all, when ``k`` is
    more than there are); None without labels."""
    if not labels:
        return None
    if k >= len(labels):
        return max(labels), 0.0
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor(labels)
    best = [float(values[torch.randperm(len(labels), generator=g)[:k]].max()) for _ in range(draws)]
    return statistics.fmean(best), statistics.stdev(best)


def random_pool(collection: Path | None, runs: list[Path], task: str) -> list[tuple[float, float]]:
    """(backbone MACs, label) of random archs trained with the searches' data and budget: a collection's records,
    or the archs ``random`` searches trained (their metrics.jsonl rows; the searches' cost model is ``flops``)."""
    if collection is not None:
        return [(r.macs, r.tasks[task].label) for r in PerfDataset.read(collection).records
                if task in r.tasks and r.tasks[task].label is not None]
    key = f"trained/{task}/{get_registry().get('task', task).primary_metric}"
    pool = []
    for metrics in sorted(m for folder in runs for m in folder.glob("seed*/metrics.jsonl")):
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if row["phase"] == "search" and key in row:
                pool.append((row["cost"], row[key]))
    return pool


def retrained(folders: list[Path], task: str) -> dict[str, float]:
    """The value of each arch of ``nascore train`` folders (its choices as sorted JSON -> its metric)."""
    key = f"val/{task}/{get_registry().get('task', task).primary_metric}"
    out = {}
    for folder in folders:
        arch = json.loads((folder / "summary.json").read_text())["archs"]["shared"]
        out[json.dumps(arch["choices"], sort_keys=True)] = arch["train"][key]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("compare_dirs", nargs="+", type=Path)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--collection", type=Path, help="performance dataset of random archs (same data, budget)")
    where.add_argument("--random-runs", type=Path, nargs="+", help="or: the folders of random specs' compare runs, "
                                                                   "whose trained archs (every seed's) are the pool")
    p.add_argument("--task", default="classification")
    p.add_argument("--retrained", type=Path, nargs="+", default=[],
                   help="`nascore train` folders of found archs trained again (matched by their choices): their "
                        "values replace the searches', the other archs are left out; train the pool the same way")
    p.add_argument("--k", type=int, help="random best-of-k with this k (default: the archs each strategy trained)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    pool = random_pool(args.collection, args.random_runs, args.task)
    again = retrained(args.retrained, args.task)
    out = {}
    for folder in args.compare_dirs:
        results = json.loads((folder / "compare.json").read_text())
        by_spec: dict[str, list[dict]] = {}
        for key, run in results.items():
            by_spec.setdefault(key.split("/")[0], []).extend(run["entries"])
        for name, entries in by_spec.items():
            if again:
                entries = [{**e, "value": again[key]} for e in entries
                           if (key := json.dumps(e["choices"], sort_keys=True)) in again]
                if not entries:
                    continue
            spec_path = next((folder / name).glob("seed*/spec.yaml"))
            spec = load_spec(spec_path)
            target, table = spec.objective.target, macs_table(spec)
            rows = []
            for e in entries:
                macs = table.of_choices(e["choices"])
                cheaper = [label for m, label in pool if m <= macs]
                rows.append({"seed": e["seed"], "value": e["value"], "backbone_macs": macs,
                             "best_cheaper_random": max(cheaper) if cheaper else None,
                             "cheaper_random_archs": len(cheaper), "archs_trained": e["archs_trained"],
                             "search_seconds": e["search_seconds"]})
            under = [label for m, label in pool if m <= target]
            # every arch trained for the search: in it, and the ones its predictor was fitted on
            k = args.k or max(1, round(statistics.fmean(r["archs_trained"] for r in rows))) + \
                (entries[0]["labelled_archs"] or 0)
            best = best_of_k(under, k)
            values = [r["value"] for r in rows]
            out[name if name not in out else f"{name} ({folder.name})"] = {"runs": rows, "mean": statistics.fmean(values),
                         "std": statistics.stdev(values) if len(values) > 1 else 0.0, "target_macs": target,
                         "random_under_target": len(under), "best_random_under_target": max(under, default=None),
                         f"random_best_of_{k}": {"k": k, "mean": best[0], "std": best[1]} if best else {"k": k}}
    print(f"| strategy | {args.task} metric (seeds) | mean +- std | backbone M MACs | best random arch of <= MACs | "
          "random best-of-k within budget | search min |")
    print("|---|---|---|---|---|---|---|")
    for name, r in out.items():
        rb = next(v for k, v in r.items() if k.startswith("random_best_of_"))
        minutes = [x["search_seconds"] / 60 for x in r["runs"] if x["search_seconds"] is not None]
        values = ", ".join(f"{x['value']:.3f}" for x in r["runs"])
        macs = ", ".join(f"{x['backbone_macs'] / 1e6:.2f}" for x in r["runs"])
        cheaper = ", ".join("-" if x["best_cheaper_random"] is None else f"{x['best_cheaper_random']:.3f}"
                            for x in r["runs"])
        spent = f"{statistics.fmean(minutes):.1f}" if minutes else "-"
        best = f"{rb['mean']:.3f} +- {rb['std']:.3f}" if "mean" in rb else "none within it"
        print(f"| {name} | {values} | {r['mean']:.3f} +- {r['std']:.3f} | {macs} | {cheaper} | k={rb['k']}: {best} | "
              f"{spent} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
