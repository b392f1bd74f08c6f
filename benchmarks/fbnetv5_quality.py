"""FBNetV5 quality: per task, the arch from the three-task search vs a single-task search vs random archs at
equal multiply-adds, each retrained from scratch with the same budget on digit-scenes.

1. ``nascore run`` on ``examples/fbnetv5.yaml`` (or ``--spec``) (classification + segmentation + detection, one REINFORCE
   search) -> ``arch_<task>.json`` for each task;
2. ``nascore run`` on the same spec with one task -> that task's single-task arch (same space, strategy and
   budget);
3. ``--random`` archs per task drawn uniformly over keep/skip and kept when their backbone multiply-adds are
   within ``--tolerance`` of the three-task arch's (rejection sampling; the FLOPs table of the supernet);
4. ``nascore train ARCH --spec`` for every arch with the task alone and the same ``train:`` block.

Every run lands in ``--out`` (default ``runs/fbnetv5-quality``); a run whose ``summary.json`` exists is not
repeated, so an interrupted benchmark resumes. Prints a markdown table: per task, each arch's validation
metrics, backbone and total multiply-adds.

    python benchmarks/fbnetv5_quality.py [--spec SPEC] [--out DIR] [--epochs 8] [--random 5] [--threads 1]

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless): ``--set`` overrides the spec of every run,
``--train-batch`` the retraining's batch size:

    python benchmarks/fbnetv5_quality.py --out /tmp/v5-smoke --epochs 1 --random 1 --tolerance 1 --train-batch 4 \
        --set dataset.image_size=32 --set space.input_size=32 --set dataset.num_train=10 --set dataset.num_val=4 \
        --set strategy.epochs=1 --set strategy.warmup_epochs=0 --set strategy.batch_size=4
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import yaml
from resumable import run_once  # sibling module (the scripts run from benchmarks/)

from nascore.arch import Arch
from nascore.costs.flops import FlopsCost
from nascore.spec import apply_overrides, read_spec_file
from nascore.supernet import random_choices

SPEC = Path(__file__).resolve().parents[1] / "examples" / "fbnetv5.yaml"
TASKS = ("classification", "segmentation", "detection")
METRIC = {"classification": "top1", "segmentation": "miou", "detection": "map_50"}


def write_spec(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def random_archs(arch: Arch, n: int, tolerance: float, seed: int) -> list[Arch]:
    """``n`` keep/skip archs of ``arch``'s space whose backbone MACs are within ``tolerance`` of ``arch``'s."""
    from nascore.registry import get_registry

    space = get_registry().get("space", arch.space)(arch.config)
    supernet = space.supernet()
    table = supernet.price(FlopsCost({}), space.input_size, 3)
    decisions = supernet.decisions()
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
    from nascore.registry import get_registry

    space = get_registry().get("space", arch.space)(arch.config)
    supernet = space.supernet()
    return supernet.price(FlopsCost({}), space.input_size, 3).of_choices(arch.choices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC, help="the three-task search spec")
    parser.add_argument("--out", type=Path, default=Path("runs/fbnetv5-quality"))
    parser.add_argument("--epochs", type=int, default=8, help="retraining epochs for every arch")
    parser.add_argument("--random", type=int, default=5, help="random archs per task")
    parser.add_argument("--tolerance", type=float, default=0.05, help="relative MAC tolerance of random archs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-batch", type=int, default=32, help="retraining batch size")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the search spec (as nascore's --set), in every run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    base = apply_overrides(read_spec_file(args.spec), args.overrides)
    base["pareto"] = {"samples": 0}
    search_spec = write_spec(base, out / "specs" / "search3.yaml")
    three = run_once(["run", str(search_spec)], out / "search3")
    rows: dict[str, list[tuple[str, dict]]] = {}
    for task in TASKS:
        task_spec = dict(base, tasks=[t for t in base["tasks"] if (t if isinstance(t, str) else t["name"]) == task])
        single = write_spec(task_spec, out / "specs" / f"search_{task}.yaml")
        run_once(["run", str(single)], out / f"search_{task}")
        train_spec = write_spec(dict(task_spec, train={"epochs": args.epochs, "batch_size": args.train_batch,
                                                       "optimizer": "adamw", "lr": 0.002, "weight_decay": 1e-4}),
                                out / "specs" / f"train_{task}.yaml")
        searched = Arch.load(out / "search3" / f"arch_{task}.json")
        candidates = [("three-task search", searched),
                      ("single-task search", Arch.load(out / f"search_{task}" / f"arch_{task}.json"))]
        randoms = random_archs(searched, args.random, args.tolerance, seed=1)
        candidates += [(f"random {i + 1}", a) for i, a in enumerate(randoms)]
        rows[task] = []
        for label, arch in candidates:
            key = label.replace(" ", "_").replace("-", "_")
            arch_file = out / "archs" / f"{task}_{key}.json"
            arch_file.parent.mkdir(parents=True, exist_ok=True)
            arch.save(arch_file)
            summary = run_once(["train", str(arch_file), "--spec", str(train_spec)], out / f"train_{task}_{key}")
            result = summary["archs"][task]["train"]
            rows[task].append((label, {**result, "backbone_macs": backbone_macs(arch)}))
    print(f"retraining: {args.epochs} epochs, AdamW lr 0.002, batch {args.train_batch}, digit-scenes {base['dataset']['image_size']}px "
          f"({base['dataset']['num_train']} train / {base['dataset']['num_val']} val); three-task search: "
          f"{len(three['archs'])} archs")
    for task in TASKS:
        metric = METRIC[task]
        print(f"\n{task} (val {metric})\n")
        print(f"| arch | val {metric} | other metrics | backbone MMACs | total MMACs |")
        print("|---|---|---|---|---|")
        for label, r in rows[task]:
            others = ", ".join(f"{k.rsplit('/', 1)[1]} {v:.3f}" for k, v in r.items()
                               if k.startswith(f"val/{task}/") and k != f"val/{task}/{metric}")
            print(f"| {label} | {r[f'val/{task}/{metric}']:.3f} | {others} | {r['backbone_macs'] / 1e6:.1f} | "
                  f"{r['macs'] / 1e6:.1f} |")
        rand = [r[f"val/{task}/{metric}"] for label, r in rows[task] if label.startswith("random")]
        print(f"| random mean +- sd | {statistics.mean(rand):.3f} +- {statistics.pstdev(rand):.3f} | | | |")


if __name__ == "__main__":
    main()
