"""FBNetV5 quality: per task, the archs of three-task searches against random archs of equal multiply-adds, each
trained from scratch with the task alone and the same training, on digit-scenes.

1. ``nascore run`` on ``--spec`` (default ``benchmarks/search/fbnetv5.yaml``: classification + segmentation +
   detection, one REINFORCE search) once per ``--seeds`` seed -> ``arch_<task>.json`` for each task;
2. per task and search seed, ``--random`` archs drawn uniformly over keep/skip and kept when their backbone
   multiply-adds are within ``--tolerance`` of that search's arch's (rejection sampling over the supernet's FLOPs
   table; each (task, seed) its own draw);
3. ``nascore train ARCH --spec`` for every arch with the task alone and the spec's ``train:`` block.

Every run lands in ``--out`` (default ``runs/fbnetv5-quality``); a run whose ``summary.json`` exists is not
repeated, so an interrupted benchmark resumes, and two processes given different ``--seeds`` fill one ``--out``
side by side (a last call with every seed prints the whole table). Prints, per task, each search's arch against the
random archs of its multiply-adds (mean, sd, best, and how many sds above their mean), then the searched archs'
mean +- sd over seeds against every random arch's.

    python benchmarks/fbnetv5_quality.py [--spec SPEC] [--out DIR] [--seeds 0 1 2] [--tasks T ...] [--random 3]

``--tasks`` trains and compares some of the tasks only (the random archs drawn are the same as in a full run), e.g.
one task again with another training recipe, the searches copied or reused: ``--tasks detection --set
train.lr=0.05``.

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless): ``--set`` overrides the spec of every run:

    python benchmarks/fbnetv5_quality.py --out /tmp/v5-smoke --seeds 0 --random 1 --tolerance 1 \
        --set dataset.num_train=10 --set dataset.num_val=4 --set strategy.epochs=1 --set strategy.warmup_epochs=0 \
        --set strategy.batch_size=4 --set train.epochs=1 --set train.batch_size=4
"""
from __future__ import annotations

import statistics
from pathlib import Path

import torch
import yaml
from resumable import against_random_parser, base_spec, run_once  # sibling module (scripts run from benchmarks/)

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost
from nascore.supernet import random_choices

SPEC = Path(__file__).resolve().parent / "search" / "fbnetv5.yaml"
METRIC = {"classification": "top1", "segmentation": "miou", "detection": "map_50"}


def write_spec(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def macs_table(arch: Arch):
    from nascore.registry import get_registry

    space = get_registry().get("space", arch.space)(arch.config)
    supernet = space.supernet()
    return supernet.decisions(), supernet.price(FlopsCost({}), space.input_size, 3)


def random_archs(arch: Arch, n: int, tolerance: float, seed: int) -> list[Arch]:
    """``n`` keep/skip archs of ``arch``'s space whose backbone MACs are within ``tolerance`` of ``arch``'s."""
    decisions, table = macs_table(arch)
    target = table.of_choices(arch.choices)
    generator = torch.Generator().manual_seed(seed)
    found: list[Arch] = []
    for _ in range(200000):
        choices = random_choices(decisions, generator)
        if abs(table.of_choices(choices) / target - 1) <= tolerance and choices != arch.choices \
                and all(choices != a.choices for a in found):
            found.append(Arch(space=arch.space, config=arch.config, choices=choices, task=arch.task))
            if len(found) == n:
                return found
    raise SystemExit(f"found only {len(found)} random archs within {tolerance:.0%} of {target / 1e6:.2f}M MACs")


def backbone_macs(arch: Arch) -> float:
    return macs_table(arch)[1].of_choices(arch.choices)


def task_name(task: str | dict) -> str:
    return task if isinstance(task, str) else task["name"]


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    parser = against_random_parser(__doc__, SPEC, "runs/fbnetv5-quality", "archs")
    parser.add_argument("--tasks", nargs="+", help="train and compare these of the spec's tasks only (default: all)")
    args = parser.parse_args()
    out: Path = args.out
    base = base_spec(args)
    every = [task_name(t) for t in base["tasks"]]
    if args.tasks and not set(args.tasks) <= set(every):
        parser.error(f"--tasks {args.tasks}: the spec's tasks are {every}")
    tasks = args.tasks or every
    # rows[task][seed] = (searched arch's result, [random archs' results]); a result carries its backbone MACs
    rows: dict[str, dict[int, tuple[dict, list[dict]]]] = {t: {} for t in tasks}
    for seed in args.seeds:
        # no train: block in the search's spec: `nascore run` would train the found archs too, as step 3 does
        search = {k: v for k, v in base.items() if k != "train"}
        search_spec = write_spec(dict(search, seed=seed), out / "specs" / f"search3_seed{seed}.yaml")
        run_once(["run", str(search_spec)], out / f"search3_seed{seed}")
        for task in tasks:
            train_spec = write_spec(dict(base, tasks=[t for t in base["tasks"] if task_name(t) == task]),
                                    out / "specs" / f"train_{task}.yaml")
            searched = Arch.load(out / f"search3_seed{seed}" / f"arch_{task}.json")
            randoms = random_archs(searched, args.random, args.tolerance, seed=1000 * seed + every.index(task))
            results = []
            for key, arch in [("searched", searched)] + [(f"random{i + 1}", a) for i, a in enumerate(randoms)]:
                arch_file = out / "archs" / f"{task}_seed{seed}_{key}.json"
                arch_file.parent.mkdir(parents=True, exist_ok=True)
                arch.save(arch_file)
                summary = run_once(["train", str(arch_file), "--spec", str(train_spec)],
                                   out / f"train_{task}_seed{seed}_{key}")
                results.append({**summary["archs"][task]["train"], "backbone_macs": backbone_macs(arch)})
            rows[task][seed] = (results[0], results[1:])
    data = base["dataset"]
    print(f"training: {base['train']}; digit-scenes {data['image_size']} px ({data['num_train']} train / "
          f"{data['num_val']} val); search seeds {args.seeds}, {args.random} random archs per task and search "
          f"within {args.tolerance:.0%} of its backbone multiply-adds")
    for task in tasks:
        key = f"val/{task}/{METRIC[task]}"
        print(f"\n{task} (val {METRIC[task]})\n")
        print("| search seed | searched | backbone M MACs | random of its MACs: mean +- sd | best | "
              "searched - mean, in sds |")
        print("|---|---|---|---|---|---|")
        for seed, (searched, randoms) in rows[task].items():
            values = [r[key] for r in randoms]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            print(f"| {seed} | {searched[key]:.3f} | {searched['backbone_macs'] / 1e6:.2f} | {mean_sd(values)} | "
                  f"{max(values):.3f} | {(searched[key] - statistics.mean(values)) / sd:+.1f} |")
        found = [s[key] for s, _ in rows[task].values()]
        pool = [r[key] for _, randoms in rows[task].values() for r in randoms]
        print(f"| all | {mean_sd(found)} | | {mean_sd(pool)} ({len(pool)} archs) | {max(pool):.3f} | |")


if __name__ == "__main__":
    main()
