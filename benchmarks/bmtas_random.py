"""BMTAS against random trees: per search seed, the branched network BMTAS finds against random trees of its
multiply-adds, each trained from scratch with the spec's ``train:`` block, on digit-scenes.

1. ``nascore run`` on ``--spec`` (default ``benchmarks/search/bmtas.yaml``) once per ``--seeds`` seed: the search,
   then the found ``branch_config.json`` trained; seed 0's run also trains the fully task-specific and the
   fully shared networks (the baseline of the relative performance, and two fixed trees);
2. per seed, ``--random`` trees drawn top-down (``random_tree``) and kept when their encoder multiply-adds are within
   ``--tolerance`` of the found tree's (rejection sampling over the space's cost table);
3. ``nascore train TREE --spec`` for every random tree, with the search's seed (as its run trained the found tree);
4. with ``--retrain-seed N``, every tree (the found one and the random ones) trained again with seed N: the labels'
   training-seed noise, against which the found tree's margin is read (its margin over the two trainings' means).

Relative performance = the mean over tasks of the primary metric's relative change against the fully task-specific
network (as ``nascore run`` reports it). Every run lands in ``--out`` (default ``runs/bmtas-random``); a run whose
``summary.json`` exists is not repeated, so an interrupted benchmark resumes, and two processes given different
``--seeds`` fill one ``--out`` side by side (a last call with every seed prints the whole table).

    python benchmarks/bmtas_random.py [--spec SPEC] [--out DIR] [--seeds 0 1 2] [--random 3] [--threads 1]
        [--retrain-seed 10]

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless):

    python benchmarks/bmtas_random.py --out /tmp/bmtas-random --seeds 0 --random 1 --tolerance 1 \
        --set dataset.num_train=10 --set dataset.num_val=4 --set strategy.epochs=2 --set strategy.batch_size=4 \
        --set train.epochs=1 --set train.batch_size=4
"""
from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import yaml
from resumable import against_random_parser, base_spec, run_once  # sibling module (scripts run from benchmarks/)

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost
from nascore.spaces.branching import choices_of, random_tree
from nascore.spec import load_spec
from nascore.train import relative_performance

SPEC = Path(__file__).resolve().parent / "search" / "bmtas.yaml"


def main() -> None:
    parser = against_random_parser(__doc__, SPEC, "runs/bmtas-random", "trees")
    parser.add_argument("--retrain-seed", type=int, default=None, metavar="N",
                        help="train every tree again with seed N (the labels' training-seed noise)")
    args = parser.parse_args()
    out: Path = args.out
    base = base_spec(args)
    spec_file = out / "specs" / "search.yaml"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(yaml.safe_dump(base, sort_keys=False))
    spec = load_spec(spec_file)
    tasks = [t.create() for t in spec.tasks]
    space = spec.space.create()
    table = space.supernet().price(FlopsCost({}), space.input_size, 3)
    names = [t.name for t in tasks]
    keys = [f"val/{t.name}/{t.primary_metric}" for t in tasks]

    def tree_macs(choices: dict[str, str]) -> float:
        return table.of_choices(choices)

    # rows[seed] = (found tree's result, [random trees' results]); a result carries its encoder MACs
    rows: dict[int, tuple[dict, list[dict]]] = {}
    again: dict[int, tuple[dict, list[dict]]] = {}  # the same with every tree trained again (--retrain-seed)
    for seed in args.seeds:
        summary = run_once(["run", str(spec_file), "--set", f"seed={seed}",
                            "--set", f"train.references={'true' if seed == 0 else 'false'}"],
                           out / f"search_seed{seed}")
        entry = summary["archs"]["shared"]
        found = Arch.load(out / f"search_seed{seed}" / "branch_config.json")
        target = tree_macs(found.choices)
        rng, trees = random.Random(seed), []
        for _ in range(200000):
            choices = choices_of(random_tree(len(table.layer_names), len(names), rng), table.layer_names, names)
            if abs(tree_macs(choices) / target - 1) <= args.tolerance and choices != found.choices \
                    and choices not in trees:
                trees.append(choices)
                if len(trees) == args.random:
                    break
        else:
            raise SystemExit(f"found only {len(trees)} random trees within {args.tolerance:.0%} of "
                             f"{target / 1e6:.1f}M MACs")
        # the random trees trained as the search's run trained its tree: the same train: block and seed
        train_spec = out / "specs" / f"train_seed{seed}.yaml"
        train_spec.write_text(yaml.safe_dump({**base, "seed": seed, "train": {**base["train"], "references": False}},
                                             sort_keys=False))
        results, tree_files = [], [out / f"search_seed{seed}" / "branch_config.json"]
        for i, choices in enumerate(trees):
            tree = Arch(space=found.space, config=found.config, choices=choices)
            tree_files.append(out / "trees" / f"seed{seed}_random{i + 1}.json")
            tree_files[-1].parent.mkdir(parents=True, exist_ok=True)
            tree.save(tree_files[-1])
            trained = run_once(["train", str(tree_files[-1]), "--spec", str(train_spec)],
                               out / f"train_seed{seed}_random{i + 1}")
            results.append({**trained["archs"]["shared"]["train"], "encoder_macs": tree_macs(choices),
                            "described": space.describe(tree)})
        rows[seed] = ({**entry["train"], "encoder_macs": target, "described": entry["described"]}, results)
        if args.retrain_seed is not None:
            retrain_spec = out / "specs" / f"retrain{args.retrain_seed}.yaml"
            retrain_spec.write_text(yaml.safe_dump(
                {**base, "seed": args.retrain_seed, "train": {**base["train"], "references": False}}, sort_keys=False))
            retrained = [run_once(["train", str(f), "--spec", str(retrain_spec)],
                                  out / f"retrain{args.retrain_seed}_seed{seed}_{'found' if i == 0 else f'random{i}'}")
                         ["archs"]["shared"]["train"] for i, f in enumerate(tree_files)]
            again[seed] = (retrained[0], retrained[1:])
    seed0 = out / "search_seed0" / "summary.json"
    if not seed0.is_file():
        raise SystemExit(f"{seed0} missing: seed 0's run trains the reference networks; run with seed 0 too")
    references = json.loads(seed0.read_text())["archs"]["shared"]["references"]
    baseline = references["task_specific"]

    def relative(result: dict) -> float:
        return 100 * relative_performance(result, baseline, tasks)

    def cells(result: dict) -> str:
        return " | ".join(f"{result[k]:.3f}" for k in keys) + f" | {relative(result):+.1f}%"

    print(f"training: {base['train']}; digit-scenes {base['dataset']['image_size']} px "
          f"({base['dataset']['num_train']} train / {base['dataset']['num_val']} val); {args.random} random trees "
          f"per search within {args.tolerance:.0%} of its encoder multiply-adds\n")
    print("| network | encoder M MACs | " + " | ".join(k[4:] for k in keys) + " | relative |")
    print("|---|---:|" + "---:|" * len(keys) + "---:|")
    for seed, (found, randoms) in rows.items():
        print(f"| BMTAS seed {seed} | {found['encoder_macs'] / 1e6:.1f} | {cells(found)} |")
        for i, r in enumerate(randoms):
            print(f"| random tree {i + 1} of seed {seed} | {r['encoder_macs'] / 1e6:.1f} | {cells(r)} |")
    for name, r in references.items():
        print(f"| {name.replace('_', ' ')} | {tree_macs(space.reference_archs()[name]) / 1e6:.1f} | {cells(r)} |")
    found_rel = [relative(f) for f, _ in rows.values()]
    random_rel = [relative(r) for _, randoms in rows.values() for r in randoms]

    def mean_sd(values: list[float]) -> str:
        return f"{statistics.mean(values):+.1f}% +- {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"

    print(f"\nrelative performance: BMTAS {mean_sd(found_rel)} ({len(found_rel)} searches), random trees of equal "
          f"cost {mean_sd(random_rel)} ({len(random_rel)} trees)")
    for k in keys:
        found_k = [f[k] for f, _ in rows.values()]
        random_k = [r[k] for _, randoms in rows.values() for r in randoms]
        print(f"{k[4:]}: BMTAS {statistics.mean(found_k):.3f} ({', '.join(f'{v:.3f}' for v in found_k)}), random "
              f"trees {statistics.mean(random_k):.3f} +- {statistics.stdev(random_k) if len(random_k) > 1 else 0:.3f} "
              f"({min(random_k):.3f}-{max(random_k):.3f})")
    for seed, (found, randoms) in rows.items():
        print(f"seed {seed}: BMTAS " + "; ".join(f"{layer} {groups}" for layer, groups in found["described"]))
        for i, r in enumerate(randoms):
            print(f"seed {seed}: random {i + 1} " + "; ".join(f"{layer} {groups}" for layer, groups in r["described"]))
    if again:
        training_seed_noise(rows, again, keys, args.retrain_seed)


def training_seed_noise(rows: dict[int, tuple[dict, list[dict]]], again: dict[int, tuple[dict, list[dict]]],
                        keys: list[str], retrain_seed: int) -> None:
    """Every tree's two trainings; per metric the training-seed standard deviation of one label (from the paired
    differences: var(a - b) = 2 sd^2) and the found trees' margin over the random ones on the two trainings' means."""
    print(f"\nevery tree trained again with seed {retrain_seed} (first training -> again):")
    pairs: list[tuple[str, dict, dict]] = []
    for seed, (found, randoms) in again.items():
        first_found, first_randoms = rows[seed]
        pairs.append((f"BMTAS seed {seed}", first_found, found))
        pairs += [(f"random tree {i + 1} of seed {seed}", a, b) for i, (a, b) in enumerate(zip(first_randoms, randoms))]
    for name, a, b in pairs:
        print(f"{name}: " + "; ".join(f"{k[4:]} {a[k]:.3f} -> {b[k]:.3f}" for k in keys))
    for k in keys:
        sd = math.sqrt(sum((a[k] - b[k]) ** 2 for _, a, b in pairs) / (2 * len(pairs)))
        found = [(rows[s][0][k] + again[s][0][k]) / 2 for s in again]
        random_ = [(a[k] + b[k]) / 2 for s in again for a, b in zip(rows[s][1], again[s][1])]
        above = sum(f > r for s, f in zip(again, found)
                    for r in ((a[k] + b[k]) / 2 for a, b in zip(rows[s][1], again[s][1])))
        margin = statistics.mean(found) - statistics.mean(random_)
        print(f"{k[4:]}: training-seed sd of one label {sd:.3f} ({len(pairs)} trees); means of the two trainings: "
              f"BMTAS {statistics.mean(found):.3f}, random trees {statistics.mean(random_):.3f} "
              f"(margin {margin:+.3f}, {f'{margin / sd:+.1f}' if sd else 'n/a'} training-seed sds); "
              f"BMTAS above {above} of its seeds' {len(random_)} random trees")


if __name__ == "__main__":
    main()
