"""What a supernet's training costs against training archs standalone, measured in one run (BENCHMARKS.md,
"Supernets that rank"): the spec's supernet trained one-shot under a rule (``nascore.performance.oneshot``, as
``nascore bench supernet-rank`` trains it), then the first ``--archs`` archs of a performance dataset trained
standalone with the spec's ``train`` block (as ``nascore bench collect`` trains them), one after the other in this
process. Reported: CPU seconds of this process (``time.process_time``: what the work costs, whatever else runs on
the machine) and wall seconds, and the supernet's cost in archs trained standalone.

    python benchmarks/supernet_cost.py benchmarks/perfdata/fbnet_12ep.yaml perf/fbnet_12ep --rule sandwich \\
        --set space.shared_weights=true --archs 10
    # the supernet alone, stage 2's blocks choosing between k3 and k5 only (its loss per epoch):
    python benchmarks/supernet_cost.py benchmarks/perfdata/fbnetv2_12ep.yaml perf/fbnetv2_12ep --archs 0 \\
        --set space.shared_weights=true --set "space.stages.1.types=[k3, k5]"
    # smoke: --archs 1 --epochs 1 --set dataset.num_train=16 --set dataset.num_val=8 --set train.epochs=1
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nascore.parts import Parts
from nascore.performance.collect import Collector
from nascore.performance.oneshot import RULES, OneShot, train_supernet
from nascore.performance.perfdata import PerfDataset
from nascore.progress import Reporter
from nascore.spec import load_spec


def timed(work) -> tuple[object, float, float]:
    """``work()``, its CPU seconds (this process) and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec")
    p.add_argument("dataset", type=Path, help="a performance dataset folder of the spec's space (its plan's archs)")
    p.add_argument("--rule", choices=RULES, default="uniform")
    p.add_argument("--epochs", type=int, help="supernet epochs (default: the spec's train.epochs)")
    p.add_argument("--archs", type=int, default=10, help="archs of the dataset trained standalone (0: the "
                   "supernet alone, its loss per epoch printed; the dataset is not read)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="write the numbers here too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec, args.set)
    parts = Parts.build(spec)
    epochs = args.epochs or spec.train.epochs
    with tempfile.TemporaryDirectory() as tmp:
        _, supernet_cpu, supernet_wall = timed(lambda: train_supernet(
            spec, parts, Path(tmp) / "supernet.pt", epochs, Reporter(), OneShot(rule=args.rule)))
    if args.archs == 0:
        print(f"{args.rule} supernet, {epochs} epochs: {supernet_cpu:.1f} CPU s, {supernet_wall:.1f} wall s")
        return
    manifest = PerfDataset.read(args.dataset).manifest.model_copy(update={"spec": spec.dump()})
    collector = Collector(manifest, parts)
    archs = []
    for index in range(min(args.archs, len(manifest.plan))):
        _, cpu, wall = timed(lambda: collector.record(index))  # noqa: B023 (called at once)
        archs.append((cpu, wall))
    arch_cpu = statistics.mean(c for c, _ in archs)
    arch_wall = statistics.mean(w for _, w in archs)
    row = {"rule": args.rule, "epochs": epochs, "supernet_cpu_s": round(supernet_cpu, 1),
           "supernet_wall_s": round(supernet_wall, 1), "archs": len(archs), "arch_cpu_s": round(arch_cpu, 1),
           "arch_wall_s": round(arch_wall, 1), "supernet_in_archs_cpu": round(supernet_cpu / arch_cpu, 2),
           "supernet_in_archs_wall": round(supernet_wall / arch_wall, 2)}
    print(f"torch {torch.__version__}, {args.threads} thread(s); {spec.source}, overrides {args.set or 'none'}")
    print("| supernet | epochs | CPU s | wall s | archs trained standalone | CPU s per arch | wall s per arch "
          "| supernet = archs (CPU) | supernet = archs (wall) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.rule} | {epochs} | {row['supernet_cpu_s']} | {row['supernet_wall_s']} | {len(archs)} | "
          f"{row['arch_cpu_s']} | {row['arch_wall_s']} | {row['supernet_in_archs_cpu']} | "
          f"{row['supernet_in_archs_wall']} |")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
