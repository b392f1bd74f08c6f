"""DNAS epoch time under torchrun on the CPU: 2 gloo processes x 1 thread against 1 process x 2 threads (and 1
process x 1 thread, for reference), same global batch (nascore's ``batch_size`` is the global batch: each rank
steps on half of it), same spec.

Each configuration runs ``nascore run`` on a DNAS spec (fbnet at width 0.5 on 32 px digit-scenes, 320 training
images, batch 64: 4 weight steps and 1 architecture step per epoch, the first epoch weights only); an observer
registered in each process stamps the end of every epoch, and a search epoch's time is the gap between two stamps
(the derived arch's evaluation included; epoch 0, weights only and timed with the supernet's pricing, is left
out). The configurations alternate (A B C, C B A, ...) so that drift on a busy machine hits them alike; medians
are reported. It also prints the "on paper" communication of a DNAS step on the full FBNet supernet (ImageNet:
width 1.0, 224 px, 1000 classes). Run from the repository root:

    python benchmarks/ddp_epoch.py              # 1 round
    python benchmarks/ddp_epoch.py --rounds 3

Smoke run (tests/test_benchmarks.py; tiny sizes, numbers meaningless; the torchrun configuration alone):

    python benchmarks/ddp_epoch.py --configs 2x1 --no-warmup --width 0.25 --train 20 --batch 4
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from nascore import hookimpl

EPOCHS = 3  # epoch 0 trains weights only; epochs 1 and 2 are full DNAS epochs
#: --configs key: configuration (processes x torch threads per process)
CONFIGS = {"2x1": "2 procs x 1 thread", "1x2": "1 proc x 2 threads", "1x1": "1 proc x 1 thread"}


def spec(cache: Path, width: float, train: int, batch: int) -> dict[str, Any]:
    return {"seed": 0,
            "dataset": {"name": "digit-scenes", "image_size": 32, "num_train": train, "num_val": 64, "num_test": 8,
                        "cache_dir": str(cache)},
            "tasks": [{"name": "classification"}],
            "space": {"name": "fbnet", "width": width, "input_size": 32, "head_channels": 256},
            "strategy": {"name": "dnas", "epochs": EPOCHS, "warmup_epochs": 1, "batch_size": batch, "bn_batches": 2},
            "cost": {"name": "flops", "loss": {"form": "multiplicative", "alpha": 0.2, "beta": 0.6}},
            "pareto": {"samples": 0}}


# -- the worker: one process of a configuration --------------------------------------------------
STAMPS: list[float] = []


@hookimpl
def nascore_run_start(run: Any) -> None:
    STAMPS.append(time.perf_counter())


@hookimpl
def nascore_epoch_end(run: Any, epoch: int, metrics: dict[str, Any]) -> None:
    STAMPS.append(time.perf_counter())


def worker(spec_path: str, out: str, times: str) -> None:
    from nascore import distributed
    from nascore.cli import main
    from nascore.registry import Source, get_registry

    get_registry().register(sys.modules[__name__], Source("ddp-epoch-benchmark", "timing"))
    assert main(["run", spec_path, "--out", out]) == 0
    if distributed.is_main():
        Path(times).write_text(json.dumps([b - a for a, b in zip(STAMPS, STAMPS[1:])]))


# -- the driver -----------------------------------------------------------------------------------
def run_config(name: str, folder: Path, round_: int) -> list[float]:
    out, times = folder / f"{name}-{round_}", folder / f"{name}-{round_}.json"
    me = [str(Path(__file__).resolve()), "--worker", str(folder / "spec.yaml"), str(out), str(times)]
    threads = int(name.split(" x ")[1].split()[0])
    if name.startswith("2 procs"):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *me]
    else:
        command = [sys.executable, *me]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(times.read_text())


def on_paper() -> None:
    """Bytes all-reduced per DNAS step on the FBNet supernet (ImageNet), and per rank under ring all-reduce."""
    from nascore.dataset import DataInfo
    from nascore.spaces.fbnet import FBNetSpace
    from nascore.task import build_network
    from nascore.tasks.classification import Classification

    space = FBNetSpace({})
    supernet = space.supernet()
    net = build_network(supernet, [Classification({"num_classes": 1000})],
                        DataInfo(in_channels=3, image_size=224, num_classes={"label": 1000}))
    weights = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    theta = sum(len(d.options) for d in supernet.decisions())
    size = 4 * weights
    print(f"\nFBNet supernet (width 1.0, 224 px, 1000 classes): {weights:,} weight elements = {size / 2**20:.1f} MiB "
          f"fp32 all-reduced per weight step; theta: {theta} elements = {4 * theta} B per architecture step; "
          f"BatchNorm buffers broadcast from rank 0 before each weight step: {buffers / 2**20:.2f} MiB")
    print("| ranks N | sent by each rank per weight step (as much received), ring: 2(N-1)/N x size |")
    print("|---|---|")
    for n in (1, 2, 4, 8, 16, 64):
        print(f"| {n} | {2 * (n - 1) / n * size / 2**20:.1f} MiB |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="rounds over the configurations (alternating order)")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--train", type=int, default=320, help="training images")
    p.add_argument("--batch", type=int, default=64, help="global batch")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                   help="configurations to time: processes x threads (default all)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="an untimed run first, which fills the dataset cache and the OS file cache")
    p.add_argument("--worker", nargs=3, metavar=("SPEC", "OUT", "TIMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    configs = [CONFIGS[key] for key in args.configs]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec(folder / "cache", args.width, args.train, args.batch)))
        if args.warmup:
            run_config(CONFIGS["1x1"], folder, -1)
        epochs: dict[str, list[float]] = {c: [] for c in configs}
        for r in range(args.rounds):
            for name in configs if r % 2 == 0 else configs[::-1]:
                epochs[name].extend(run_config(name, folder, r)[1:EPOCHS])
    weight_steps = round(args.train * 0.8) // args.batch
    print(f"DNAS on fbnet width {args.width}, 32 px, {args.train} images, global batch {args.batch} "
          f"({weight_steps} weight steps + {args.train // 5 // args.batch} arch steps per epoch), "
          f"{args.rounds} round(s), torch threads per process as named")
    print("| configuration | search epoch, median (s) | all search epochs (s) |")
    print("|---|---|---|")
    for name in configs:
        print(f"| {name} | {statistics.median(epochs[name]):.2f} | {', '.join(f'{t:.2f}' for t in epochs[name])} |")
    if {"2x1", "1x2"} <= set(args.configs):
        ratio = statistics.median(epochs[CONFIGS["2x1"]]) / statistics.median(epochs[CONFIGS["1x2"]])
        print(f"\nsearch epoch time ratio (2 procs x 1 thread) / (1 proc x 2 threads): {ratio:.2f}")
    on_paper()


if __name__ == "__main__":
    main()
