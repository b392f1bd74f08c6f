"""One supernet, several budgets (issue 27; BENCHMARKS.md, "One supernet, three budgets"): does a `oneshot`
supernet trained once answer other cost budgets with archs that beat random ones of their cost?

Per seed, the `oneshot` search spec runs at its own budget (`nascore compare`); its `supernet.pt` is reused at every
other budget (`nascore run --supernet`: the evolution and the top archs' trainings only); the random spec (the same
space, data and training) runs at every budget (`nascore compare --set cost.loss.target=...`). Every found arch and
every random search's winner is trained again with `--retrain-seed` (the searches picked them on their own
training seed). Per budget it prints the found archs' metric against the best random arch of equal or lower cost
(every arch the random searches trained, all budgets pooled) and against random search at that budget, and the
seconds a new budget took next to the whole search with its supernet. Finished runs are reused: a stopped run
of the script resumes.

    python benchmarks/supernet_budgets.py benchmarks/search/oneshot_dmasking.yaml \
        benchmarks/search/random_dmasking.yaml --budgets 5.0e5 6.5e5 --seeds 3 --out budgets

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless): the same with ``--set`` options that shrink
the data and the trainings (``--set``), the supernet and the evolution (``--search-set``), the random archs
(``--random-set``).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from resumable import nascore_or_exit, refuse, run_once
from search_vs_random import macs_table, random_pool

from nascore.analysis.compare import search_seconds
from nascore.errors import NascoreError
from nascore.spec import load_spec


def compare(spec: Path, seeds: int, out: Path, overrides: list[str]) -> dict[int, dict]:
    """``nascore compare`` of one spec over seeds 0 to ``seeds`` - 1 (finished ones reused); seed -> its entry."""
    nascore_or_exit(["compare", str(spec), "--seeds", str(seeds), "--out", str(out), *overrides])
    results = json.loads((out / "compare.json").read_text())
    return {s: results[f"{spec.stem}/seed{s}"]["entries"][0] | {"run": out / spec.stem / f"seed{s}"}
            for s in range(seeds)}


def found(run: Path, metric: str) -> dict:
    """The found arch of a ``nascore run`` folder as a compare entry."""
    arch = json.loads((run / "summary.json").read_text())["archs"]["shared"]
    return {"value": arch["train"][metric], "choices": arch["choices"], "run": run}


def retrain(entry: dict, spec: Path, seed: int, out: Path, overrides: list[str], metric: str) -> float:
    summary = run_once(["train", str(entry["run"] / "arch.json"), "--spec", str(spec), "--set", f"seed={seed}",
                        *overrides], out)
    return summary["archs"]["shared"]["train"][metric]


def mean_sd(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("search", type=Path, help="a oneshot spec with a cost.loss budget and a train: block")
    p.add_argument("random", type=Path, help="a random spec of the same space, data, budget form and training")
    p.add_argument("--budgets", type=float, nargs="+", required=True, help="cost.loss.target values besides the "
                                                                              "search spec's own")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 to N-1 (as nascore compare's)")
    p.add_argument("--retrain-seed", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override of both specs (as nascore's --set), in every run")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE", help="of the search spec only")
    p.add_argument("--random-set", action="append", default=[], metavar="KEY=VALUE", help="of the random spec only")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = range(args.seeds)
    sets = [a for o in args.overrides for a in ("--set", o)]
    search_sets = sets + [a for o in args.search_set for a in ("--set", o)]
    random_sets = sets + [a for o in args.random_set for a in ("--set", o)]
    try:
        spec = load_spec(args.search, args.overrides + args.search_set)
        load_spec(args.random, args.overrides + args.random_set)
    except NascoreError as exc:
        refuse(str(exc))
    if spec.strategy.name != "oneshot" or spec.objective.target is None or spec.cost is None \
            or spec.cost.name != "flops":
        refuse(f"{args.search}: needs strategy oneshot and a cost.loss budget (target) of cost flops (the random "
               "archs' costs are compared with the found archs' multiply-adds)")
    task = spec.tasks[0]
    metric = f"val/{task.name}/{task.cls.primary_metric}"
    table = macs_table(spec)  # the space of every run here (a reused supernet refuses another)
    own = spec.objective.target
    budgets = sorted({own, *args.budgets})
    label = {b: f"{b:g}" for b in budgets}

    searched = {own: compare(args.search, args.seeds, args.out / "search", search_sets)}
    for b in budgets:
        if b == own:
            continue
        searched[b] = {}
        for s in seeds:
            run = args.out / "reuse" / label[b] / f"seed{s}"
            run_once(["run", str(args.search), "--supernet", str(searched[own][s]["run"] / "supernet.pt"),
                      "--set", f"seed={s}", "--set", f"cost.loss.target={b}", *search_sets], run)
            searched[b][s] = found(run, metric)
    randoms = {b: compare(args.random, args.seeds, args.out / "random" / label[b],
                          [*random_sets, "--set", f"cost.loss.target={b}"]) for b in budgets}
    pool = random_pool(None, [args.out / "random" / label[b] / args.random.stem for b in budgets], task.name)

    rows, out = [], {}
    for b in budgets:
        mine, theirs = searched[b], randoms[b]
        again = [retrain(mine[s], args.random, args.retrain_seed, args.out / "retrain" / "found" / label[b] / f"seed{s}",
                         random_sets, metric) for s in seeds]
        again_random = [retrain(theirs[s], args.random, args.retrain_seed,
                                args.out / "retrain" / "random" / label[b] / f"seed{s}", random_sets, metric)
                        for s in seeds]
        macs = [table.of_choices(mine[s]["choices"]) for s in seeds]
        cheaper = [max((v for m, v in pool if m <= c), default=None) for c in macs]
        seconds = [search_seconds(mine[s]["run"]) for s in seeds]
        values, random_values = [mine[s]["value"] for s in seeds], [theirs[s]["value"] for s in seeds]
        out[label[b]] = {"found": values, "found_macs": macs, "found_retrained": again, "best_random_cheaper": cheaper,
                         "random_search": random_values, "random_retrained": again_random,
                         "search_seconds": seconds, "reused_supernet": b != own}
        rows.append(f"| {b / 1e6:.2f}{' (the supernet search)' if b == own else ''} | {', '.join(f'{v:.3f}' for v in values)} "
                    f"({mean_sd(values)}) | {', '.join(f'{m / 1e6:.2f}' for m in macs)} | "
                    f"{', '.join('-' if c is None else f'{c:.3f}' for c in cheaper)} | "
                    f"{mean_sd(random_values)} | {mean_sd(again)} | {mean_sd(again_random)} | "
                    f"{statistics.fmean(seconds):.0f} |")
    print(f"{len(pool)} random archs trained (all budgets); search s: a reused supernet's evolution and trainings, "
          "or the whole search with its supernet")
    print(f"| budget (M MACs) | found {metric} per seed (mean +- sd) | found M | best random arch of <= its cost | "
          "random search at the budget | found, retrained | random search's winners, retrained | search s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
